"""Feature-extraction throughput against the encoder's own limit; one JSON line on stdout.

    python benchmarks/extract_throughput.py --backbone lite --n 512 [--batch-size 64] [--workers 1]
    python benchmarks/extract_throughput.py --device cuda --dataset imagefolder:/data/jpegs \
        --backbone openclip:ViT-B-16//path/to/checkpoint.pt --n 1024 --batch-size 256 --decode torch

forward_img_s: encoder.encode_images alone on already-preprocessed batches of the same size (the limit).
pipeline_img_s: the whole cached extraction of the same images, as `crossgate extract` runs it: decode,
preprocess, forward, resumable chunks written to disk and merged into a cache entry (in a temporary cache).
ratio = pipeline_img_s / forward_img_s. Models are loaded and warmed up before either clock starts.
With --decode torch (the default on a GPU), the features are also compared with the PIL path's:
cosine_vs_pil_min / _mean over the images.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time

import numpy as np
import torch


class FirstImages:
    """The first n images of one split of a dataset, as a dataset of their own (its own cache identity)."""

    def __init__(self, dataset, n: int, split: str = "test"):
        from dataclasses import replace

        items = dataset.split(split)
        if n > len(items):
            raise SystemExit(f"--n {n}: {dataset.name} has only {len(items)} {split} images")
        self.name, self.classnames, self.templates = dataset.name, dataset.classnames, dataset.templates
        self.identity = f"{dataset.identity}[{split}:{n}]"
        self._split = replace(items, labels=items.labels[:n], paths=items.paths[:n] if items.paths else None)

    def split(self, name):
        return self._split

    def ensure_images(self):
        pass


def profile(encoder, items, n: int, batch_size: int, workers: int, sync) -> dict:
    """Images per second of each stage alone, to find what limits the pipeline."""
    from dataclasses import replace

    from crossgate import pixels
    from crossgate.extraction import _PixelDataset, _read_in_threads, load_group

    def loader_speed(split, tensor_decode):
        loader = torch.utils.data.DataLoader(_PixelDataset(split, list(range(n)), encoder.preprocess, "center",
                                                           tensor_decode),
                                             batch_size=load_group(batch_size, workers),
                                             num_workers=workers, collate_fn=list)
        start = time.perf_counter()
        count = sum(len(group) for group in loader)
        return round(count / (time.perf_counter() - start), 1)

    def reader_speed(split, threads):
        start = time.perf_counter()
        dataset = _PixelDataset(split, list(range(n)), encoder.preprocess, "center", True)
        count = sum(1 for _ in _read_in_threads(dataset, threads))
        return round(count / (time.perf_counter() - start), 1)

    out = {"loader_processes_img_s": loader_speed(items, encoder.decode == "torch"),
           "loader_pil_decode_only_img_s": loader_speed(replace(items, locate=None), True),  # decode, no resize
           "loader_pil_full_img_s": loader_speed(items, False)}
    if encoder.decode == "torch" and items.locate is not None:
        # what extraction uses for file bytes (READ_THREADS), and other thread counts
        out["reader_threads_img_s"] = {t: reader_speed(items, t) for t in (1, 2, 4, 8)}
        blobs = [pixels.read_for_decode(items.locate(i), "")[1] for i in range(n)]
        batches = [blobs[s:s + batch_size] for s in range(0, n, batch_size)]
        pixels.preprocess_batch(pixels.decode_jpegs(batches[0], encoder.device), encoder.pixel_spec)  # warm-up
        sync()
        start = time.perf_counter()
        for b in batches:
            pixels.preprocess_batch(pixels.decode_jpegs(b, encoder.device), encoder.pixel_spec)
        sync()
        out["device_decode_preprocess_img_s"] = round(n / (time.perf_counter() - start), 1)
        start = time.perf_counter()
        for b in batches:
            pixels.decode_jpegs(b, encoder.device)
        sync()
        out["device_decode_only_img_s"] = round(n / (time.perf_counter() - start), 1)
    return out


def main(argv=None) -> int:
    from crossgate.allocator import keep_freed_memory
    from crossgate.cache import FeatureCache
    from crossgate.datasets import load_dataset
    from crossgate.encoders import create_encoder
    from crossgate.settings import Settings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="lite")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--n", type=int, default=512, help="images to extract (the first of --split)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None, help="loader processes (default: crossgate's per device)")
    p.add_argument("--device", default="auto")
    p.add_argument("--decode", default="auto", choices=("auto", "pil", "torch"))
    p.add_argument("--profile", action="store_true",
                   help="also time the stages alone: the loader processes, the device decode, PIL decode in workers")
    p.add_argument("--repeats", type=int, default=2, help="best of this many timings of each")
    args = p.parse_args(argv)

    settings = Settings(device=args.device, workers=args.workers, decode=args.decode)
    device, workers = settings.torch_device(), settings.loader_workers()
    if device == "cpu":
        keep_freed_memory()  # as the extraction does, so that both clocks see the same allocator
    encoder = create_encoder(args.backbone, cache_dir=settings.cache_dir, device=device, decode=args.decode)
    subset = FirstImages(load_dataset(args.dataset, settings), args.n, args.split)
    items = subset.split("test")
    batches = [torch.stack([encoder.preprocess(items.load_image(i)) for i in range(s, min(s + args.batch_size,
                                                                                          args.n))])
               for s in range(0, args.n, args.batch_size)]
    encoder.encode_images(batches[0])  # load and warm up the model

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    forward = []
    for _ in range(args.repeats):
        sync()
        start = time.perf_counter()
        for b in batches:
            encoder.encode_images(b)
        sync()
        forward.append(args.n / (time.perf_counter() - start))

    def extract(enc):
        """(best img/s over the repeats, the features) of the cached extraction, in a fresh cache each time."""
        speeds, features = [], None
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                cache = FeatureCache(tmp, batch_size=args.batch_size, workers=workers, progress=False)
                start = time.perf_counter()
                cache.ensure_image_features(enc, subset, "test")
                sync()
                speeds.append(args.n / (time.perf_counter() - start))
                features = cache.image_features(enc, subset, "test").x
        return max(speeds), features

    pipeline, features = extract(encoder)
    reference = np.concatenate([encoder.encode_images(b) for b in batches])  # the PIL path's pixels
    row = {"backbone": args.backbone, "dataset": args.dataset, "split": args.split, "n_images": args.n,
           "pipeline_img_s": round(pipeline, 2),
           "forward_img_s": round(max(forward), 2), "ratio": round(pipeline / max(forward), 3),
           "batch_size": args.batch_size, "workers": workers, "decode": encoder.decode, "device": device,
           "torch_threads": torch.get_num_threads(), "machine": platform.machine()}
    if encoder.decode == "pil":
        row["features_match_forward"] = bool(np.allclose(features, reference, atol=1e-5))
    else:
        pil_speed, pil_features = extract(copy.copy(encoder).use_decode("pil"))  # the same model, PIL decode
        cos = np.sum(features * pil_features, 1) / (np.linalg.norm(features, axis=1)
                                                    * np.linalg.norm(pil_features, axis=1))
        row.update(pil_pipeline_img_s=round(pil_speed, 2), pil_ratio=round(pil_speed / max(forward), 3),
                   cosine_vs_pil_min=round(float(cos.min()), 6), cosine_vs_pil_mean=round(float(cos.mean()), 6))
    if args.profile:
        row.update(profile(encoder, subset.split("test"), args.n, args.batch_size, workers, sync))
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
