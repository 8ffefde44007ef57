"""Issue 13's checks on a GPU machine, in one run; JSON lines on stdout (and in OUT/gpu_check.jsonl).

    python benchmarks/gpu_check.py --out DIR [--features STEM] [--jpegs 6000]

1. A folder of synthetic 500x375 JPEGs (Pets-sized photos), 10 class folders, made here.
2. open_clip ViT-B-16 and RN50 with random weights, saved as local safetensors checkpoints.
3. benchmarks/extract_throughput.py on each: the tensor decode (nvjpeg) against the encoder's forward
   pass, and the PIL path beside it (features' cosine between the two).
4. Awkward files (progressive, CMYK, grayscale, PNG, truncated) through the GPU path against PIL.
5. benchmarks/fit_speed.py --device cuda --compare-cpu on exported features (--features), and the
   ImageNet-sized probe search.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def photo(seed: int, h: int = 375, w: int = 500):
    """A smooth, photo-like image: JPEG sizes and decode costs like a real photo's, unlike pure noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    f = rng.uniform(2, 12, size=3)
    base = np.stack([np.sin(f[0] * x + rng.uniform(0, 6)), np.cos(f[1] * y + rng.uniform(0, 6)),
                     np.sin(f[2] * (x + y))], -1)
    return Image.fromarray((base * 90 + 128 + rng.normal(0, 14, (h, w, 3))).clip(0, 255).astype(np.uint8))


def _write(job):
    path, seed = job
    photo(seed).save(path, quality=90)


def make_jpegs(root: Path, n: int) -> None:
    jobs = []
    for c in range(10):
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
        jobs += [(root / f"class_{c}" / f"{k:05d}.jpg", c * 100_000 + k) for k in range(n // 10)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_write, jobs, chunksize=64))


def make_checkpoint(arch: str, path: Path) -> None:
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def odd_files_check(root: Path, device: str) -> dict:
    """Every kind of file through the GPU tensor path and the PIL path: same files kept, same one reported."""
    from crossgate.cache import FeatureCache
    from crossgate.datasets.imagefolder import ImageFolderDataset
    from crossgate.encoders import create_encoder

    for c in ("a", "b"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for k in range(3):
            photo(10 + k).save(root / c / f"plain{k}.jpg", quality=85)
        photo(20).save(root / c / "prog.jpg", progressive=True)
        photo(21).convert("CMYK").save(root / c / "cmyk.jpg")
        photo(22).convert("L").save(root / c / "gray.jpg")
        photo(23).save(root / c / "img.png")
    data = (root / "a" / "plain0.jpg").read_bytes()
    (root / "b" / "plain0.jpg").write_bytes(data[: len(data) // 2])
    dataset = ImageFolderDataset(root)
    out = {"check": "odd-files"}
    for split in ("train", "val", "test"):
        feats = {}
        for decode in ("torch", "pil"):
            enc = create_encoder("tiny-clip", device=device, decode=decode)
            cache = FeatureCache(root.parent / f"odd-cache-{decode}", batch_size=4, workers=2, progress=False,
                                 on_bad_image="skip")
            f = cache.image_features(enc, dataset, split)
            feats[decode] = (f.x, f.kept)
        (a, ka), (b, kb) = feats["torch"], feats["pil"]
        cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        out[split] = {"n": len(a), "same_rows": bool(np.array_equal(ka, kb)), "cosine_min": round(float(cos.min()), 6)}
    return out


def run(cmd: list[str], log) -> None:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    for line in lines:
        emit(json.loads(line), log)
    if proc.returncode:
        emit({"failed": " ".join(cmd), "stderr": proc.stderr[-2000:]}, log)
    emit({"ran": " ".join(cmd[1:3]), "seconds": round(time.perf_counter() - start, 1)}, log)


def emit(row: dict, log) -> None:
    text = json.dumps(row)
    print(text, flush=True)
    log.write(text + "\n")
    log.flush()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/crossgate-gpu-check"))
    p.add_argument("--jpegs", type=int, default=6000)
    p.add_argument("--features", type=Path, default=None, help="exported features for fit_speed")
    p.add_argument("--shots", default="1,4,16")
    p.add_argument("--steps", default="extract,odd,fit,imagenet")
    p.add_argument("--device", default="cuda", help="cpu: a dry run of this script")
    p.add_argument("--n", type=int, default=1024, help="test images per extraction timing (the issue's 1,024)")
    p.add_argument("--n-long", type=int, default=3584, help="train images of the longer timing")
    p.add_argument("--imagenet-iterations", default="12800")
    p.add_argument("--archs", default="ViT-B-16,RN50")
    p.add_argument("--profile", action="store_true", help="extract_throughput --profile: each stage alone")
    p.add_argument("--repeats", type=int, default=5, help="extract_throughput: best of this many timings")
    p.add_argument("--no-pil-baseline", action="store_true")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    steps = args.steps.split(",")
    log = open(args.out / "gpu_check.jsonl", "a")  # noqa: SIM115  (open for the whole run)
    import torch

    emit({"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu", "torch": torch.__version__,
          "cpus": os.cpu_count()}, log)
    py = sys.executable
    if "extract" in steps:
        jpegs = args.work / "jpegs"
        start = time.perf_counter()
        if not jpegs.is_dir():
            make_jpegs(jpegs, args.jpegs)
        emit({"made": f"{args.jpegs} JPEGs", "seconds": round(time.perf_counter() - start, 1)}, log)
        for arch in args.archs.split(","):
            ckpt = args.work / f"{arch}-random.safetensors"
            if not ckpt.exists():
                make_checkpoint(arch, ckpt)
            common = [py, str(HERE / "extract_throughput.py"), "--device", args.device,
                      "--dataset", f"imagefolder:{jpegs}", "--backbone", f"openclip:{arch}/{ckpt}",
                      "--batch-size", "256", "--repeats", str(args.repeats)] + (["--profile"] if args.profile else [])
            run(common + ["--n", str(args.n), "--decode", "torch"], log)  # the setting
            run(common + ["--n", str(args.n_long), "--split", "train", "--decode", "torch"], log)  # start-up amortised
            if arch == "ViT-B-16" and not args.no_pil_baseline:
                for workers in ("8", "15"):  # the PIL path alone, as a CPU-bound baseline
                    run(common + ["--n", str(args.n), "--decode", "pil", "--workers", workers], log)
    if "odd" in steps:
        try:
            emit(odd_files_check(args.work / "odd", args.device), log)
        except Exception as err:  # noqa: BLE001  (report and go on to the next check)
            emit({"check": "odd-files", "error": repr(err)[:1000]}, log)
    if "imagenet" in steps:
        run([py, str(HERE / "fit_speed.py"), "--device", args.device, "--imagenet-sized", "--skip-grid",
             "--imagenet-iterations", args.imagenet_iterations], log)
    if "fit" in steps and args.features:
        run([py, str(HERE / "fit_speed.py"), "--device", args.device, "--compare-cpu", "--features", str(args.features),
             "--shots", args.shots, "--seeds", "1,2"], log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
