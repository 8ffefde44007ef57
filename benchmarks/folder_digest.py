"""What keying an image folder's features costs: crossgate's stat digest (size, mtime, ctime, inode per file)
against hashing every file's content, on a folder you give or on one made here of camera-sized files.

    python benchmarks/folder_digest.py [--folder DIR] [--files 300] [--megabytes 3]

Prints one JSON object: files, bytes, seconds of each digest (the content hash twice: cold files are slower
still, what the page cache already holds is the best case measured here).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def content_digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()


def main() -> None:
    from crossgate.datasets.imagefolder import ImageFolderDataset, image_files
    from crossgate.datasets.imagefolder import content_digest as stat_digest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=None, help="an imagefolder (default: one made here)")
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--megabytes", type=float, default=3.0, help="size of each made file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            folder = Path(tmp)
            rng = np.random.default_rng(0)
            for i in range(args.files):
                (folder / f"c{i % 3}").mkdir(exist_ok=True)
                (folder / f"c{i % 3}" / f"{i}.jpg").write_bytes(rng.bytes(int(args.megabytes * 2**20)))
        dataset = ImageFolderDataset(folder)
        files = image_files(folder)
        start = time.perf_counter()
        stat_digest(dataset.root, dataset._items)
        stat_seconds = time.perf_counter() - start
        timings = []
        for _ in range(2):
            start = time.perf_counter()
            content_digest(files)
            timings.append(time.perf_counter() - start)
    print(json.dumps({"folder": str(args.folder or "generated"), "files": len(files),
                      "bytes": int(sum(f.stat().st_size for f in files)) if args.folder else
                      int(args.files * args.megabytes * 2**20),
                      "stat_digest_s": round(stat_seconds, 4), "content_sha256_s": [round(t, 4) for t in timings]}))


if __name__ == "__main__":
    main()
