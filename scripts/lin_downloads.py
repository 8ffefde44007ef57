"""Write Lin et al.'s split and few-shot index files into crossgate's downloads table, pinned to one commit.

    python scripts/lin_downloads.py GIT_DIR [--commit ac9077ee4e422f768c9b9109551468605e33ec9a]

GIT_DIR is a clone of linzhiqiu/cross_modal_adaptation (no work tree needed). Each file is pinned by the
sha256 of its content where the clone holds it, else by the git blob id the commit's tree lists (a large
file the clone left out). URLs name the commit, so the content behind them cannot move. Entries the table
already has (Pets and Food-101) are kept as they are.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
from pathlib import Path

TABLE = Path(__file__).resolve().parents[1] / "src" / "crossgate" / "data" / "downloads.json"
RAW = "https://raw.githubusercontent.com/linzhiqiu/cross_modal_adaptation/{commit}/{path}"


def tree(git_dir: Path, commit: str) -> dict[str, str]:
    out = subprocess.run(["git", "--git-dir", str(git_dir), "ls-tree", "-r", commit], capture_output=True,
                         text=True, check=True).stdout
    return {line.split("\t", 1)[1]: line.split()[2] for line in out.splitlines()}


def pin(git_dir: Path, blob: str) -> dict:
    content = subprocess.run(["git", "--git-dir", str(git_dir), "cat-file", "blob", blob], capture_output=True)
    if content.returncode == 0:
        return {"sha256": hashlib.sha256(content.stdout).hexdigest()}
    return {"git_blob": blob}


def main() -> None:
    from crossgate.datasets.coop import SPECS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("git_dir", type=Path)
    parser.add_argument("--commit", default="ac9077ee4e422f768c9b9109551468605e33ec9a")
    args = parser.parse_args()
    files = tree(args.git_dir, args.commit)
    table = json.loads(TABLE.read_text())
    names = sorted({p.split("/")[1] for p in files if p.startswith("indices/")})
    for name in names:
        if name in table:
            continue
        entry = {"files": [], "indices": {}}
        spec = SPECS.get(name)
        split = f"splits/{spec.split_file}" if spec else None
        if split in files:
            entry["files"].append({"url": RAW.format(commit=args.commit, path=split),
                                   "path": f"{spec.folder}/{spec.split_file}", **pin(args.git_dir, files[split]),
                                   "role": "split"})
        for path in sorted(p for p in files if p.startswith(f"indices/{name}/")):
            entry["indices"][Path(path).name] = {"url": RAW.format(commit=args.commit, path=path),
                                                 **pin(args.git_dir, files[path])}
        table[name] = entry
    TABLE.write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps({n: (len(table[n]["files"]), len(table[n]["indices"])) for n in names}))


if __name__ == "__main__":
    main()
