"""Where crossgate keeps things. Only the CLI builds a Settings from flags and the environment."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SHOTS = (1, 2, 4, 8, 16)  # bench's grid: training images per class
DEFAULT_SEEDS = (1, 2, 3)  # and few-shot draws


def env_positive_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        from .errors import UserError

        raise UserError(f"{name}={text!r} is not a positive integer; set it to one (e.g. {default}) or unset it")
    return int(text)


def default_cache_dir() -> Path:
    return Path(os.environ.get("CROSSGATE_CACHE") or Path.home() / ".cache" / "crossgate")


def default_data_root() -> Path:
    return Path(os.environ.get("CROSSGATE_DATA") or default_cache_dir() / "data")


@dataclass
class Settings:
    cache_dir: Path = field(default_factory=default_cache_dir)  # features, text maps
    data_root: Path = field(default_factory=default_data_root)  # downloaded / user datasets
    device: str = "auto"  # auto | cpu | cuda
    batch_size: int = 64  # images per encoder forward
    workers: int | None = None  # DataLoader workers reading / decoding images; None: per device (loader_workers)
    decode: str = "auto"  # auto | pil | torch: how images become pixels (crossgate.pixels)
    progress: bool = True  # tqdm bars on stderr
    on_bad_image: str = "fail"  # unreadable images: "fail" listing them all, or "skip" them
    chunk_images: int = field(default_factory=lambda: env_positive_int("CROSSGATE_CHUNK_IMAGES", 2048))
    # images per resumable extraction chunk (rounded to whole batches): the most work a crash can lose
    offline: bool = field(default_factory=lambda: os.environ.get("CROSSGATE_OFFLINE", "") not in ("", "0"))
    # offline: never download datasets; say which files to put where instead

    def torch_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            from .errors import UserError

            raise UserError(f"--device cuda, but this torch ({torch.__version__}) sees no CUDA GPU; "
                            "use --device cpu or auto, or install a CUDA build of torch")
        return self.device

    def loader_workers(self) -> int:
        """--workers, else per device: on a GPU 8 processes read (and where needed decode) files ahead of
        it; on a CPU the encoder's own threads use the cores, and one process more helps only with some to
        spare (measured in benchmarks/extract_throughput.py)."""
        if self.workers is not None:
            return self.workers
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if self.torch_device().startswith("cuda"):
            return max(1, min(8, cores - 1))
        return 0 if cores <= 4 else min(4, cores // 4)
