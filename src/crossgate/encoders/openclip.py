"""CLIP-family backbones through open_clip: `openclip:<arch>/<pretrained tag or local checkpoint path>`."""
from __future__ import annotations

import hashlib
import os
import warnings
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .base import BACKBONES, Encoder

PREFIX = "openclip:"
TINY_ARCH = "crossgate-tiny"  # 1-layer random ViT registered for tests: no weights, no network


def _register_tiny_config() -> None:
    import open_clip

    if TINY_ARCH not in open_clip.list_models():
        open_clip.add_model_config(Path(str(resources.files("crossgate") / "data" / "open_clip")))


def _checkpoint_digest(path: Path) -> str:
    """Size plus the first and last MiB: cheap for a 600 MB checkpoint, and changes when the file does."""
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, path.stat().st_size - (1 << 20)))
        h.update(f.read())
    return h.hexdigest()[:12]


def _looks_like_path(text: str) -> bool:
    """A pretrained part that names a file rather than a tag (tags are plain words like laion2b_s34b_b79k)."""
    return "/" in text or "\\" in text or text.startswith(("~", ".")) or text.endswith(
        (".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether huggingface.co answers a TCP connect (False at once when HF_HUB_OFFLINE is set): without
    it, a download retries for about a minute and prints a warning per retry."""
    import os
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextmanager
def _quiet_hub(offline: bool):
    """huggingface_hub's retry warnings silenced (the failure is reported once, by us); with `offline`, the
    weights come from its local cache or fail at once."""
    import logging
    import os

    from huggingface_hub import constants

    logger = logging.getLogger("huggingface_hub")
    level, before, flag = logger.level, os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    logger.setLevel(logging.ERROR)
    if offline:  # the library read the variable when it was imported: its constant is what it consults
        os.environ["HF_HUB_OFFLINE"], constants.HF_HUB_OFFLINE = "1", True
    try:
        yield
    finally:
        logger.setLevel(level)
        if offline:
            constants.HF_HUB_OFFLINE = flag
            if before is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = before


def parse_name(name: str) -> tuple[str, str | None]:
    """'openclip:ViT-B-16/openai' -> ('ViT-B-16', 'openai'); a path after the first '/' is a checkpoint."""
    spec = name[len(PREFIX):]
    arch, _, pretrained = spec.partition("/")
    if not arch:
        raise UserError(f"backbone {name!r} names no architecture; write openclip:<arch>/<pretrained>, "
                        "e.g. openclip:ViT-B-16/openai (see `crossgate backbones --all`)")
    return arch, pretrained or None


class OpenClipEncoder(Encoder):
    def __init__(self, arch: str, pretrained: str | None, device: str = "cpu", seed: int = 0,
                 allow_files: bool = True):
        import open_clip

        _register_tiny_config()
        if arch not in open_clip.list_models():
            raise UserError(f"unknown open_clip architecture {arch!r}; see `crossgate backbones --all` "
                            "for the architectures and pretrained tags")
        if pretrained and not allow_files and pretrained not in open_clip.list_pretrained_tags_by_model(arch):
            # a name read from a file a user was handed (model.json) never chooses a file to read, by any spelling
            raise UserError(f"the model names the backbone {PREFIX}{arch}/{pretrained}, which is not a pretrained "
                            "tag of open_clip; if it is a local checkpoint, give it yourself with --backbone "
                            f"{PREFIX}{arch}/PATH (it is checked against the model's backbone identity)")
        if pretrained and allow_files and Path(pretrained).expanduser().is_file():
            path = Path(pretrained).expanduser().resolve()
            weights, tag = f"file@{_checkpoint_digest(path)}", str(path)
        elif pretrained:
            known = open_clip.list_pretrained_tags_by_model(arch)
            if pretrained not in known and allow_files and _looks_like_path(pretrained):
                raise UserError(f"no such checkpoint file: {Path(pretrained).expanduser()} (from --backbone "
                                f"{PREFIX}{arch}/{pretrained}); check the path, or use a pretrained tag: "
                                f"{', '.join(known) or 'none'}")
            if pretrained not in known:
                raise UserError(f"unknown pretrained tag {pretrained!r} for {arch}; available: "
                                f"{', '.join(known) or 'none'}, or a path to a local checkpoint file")
            weights, tag = pretrained, pretrained
        else:
            weights, tag = f"random-seed{seed}", None
            torch.manual_seed(seed)  # a random model must be the same model every time: it keys the cache
        # half precision on GPU (CLIP was trained in it); fp32 on CPU, where fp16 is slow and inexact
        precision = "fp16" if str(device).startswith("cuda") else "fp32"
        hub_down = bool(tag) and weights == pretrained and not _hub_reachable()
        try:
            with _quiet_hub(offline=hub_down), warnings.catch_warnings():
                # torch's note on a checkpoint's pickle protocol is about torch, not about the user's file
                warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
                model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=tag, device=device,
                                                                             precision=precision)
        except Exception as err:  # noqa: BLE001  (an UnpicklingError, a KeyError of a foreign state dict, ...)
            if not tag:
                raise
            if weights.startswith("file@"):
                raise UserError(f"{tag} is not an open_clip checkpoint of {arch} ({type(err).__name__}: "
                                f"{' '.join(str(err).split())[:160]}); give a checkpoint file saved from that "
                                "architecture (.pt, .bin or .safetensors)") from None
            offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
            why = ("they are not in the Hugging Face local cache, and --offline (or HF_HUB_OFFLINE) forbids "
                   "downloading them" if hub_down and offline else
                   "the Hugging Face hub is unreachable and they are not in its local cache" if hub_down
                   else " ".join(str(err).split()))
            raise UserError(f"cannot load the {arch}/{pretrained} weights ({why}); run once with a network "
                            f"(they are cached), give a local checkpoint file (openclip:{arch}//path/to/weights), "
                            "or use --backbone lite, which needs no network") from None
        self.model = model.eval()
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.preprocess = preprocess
        self.device = device
        self.name = f"{PREFIX}{arch}/{pretrained or ''}"
        self.image_dim = self.text_dim = self.native_text_dim = int(model.text_projection.shape[-1]
                                                                     if hasattr(model, "text_projection")
                                                                     and model.text_projection is not None
                                                                     else model.visual.output_dim)
        pre = hashlib.sha256(repr(preprocess).encode()).hexdigest()[:8]
        self.precision = precision
        self._identity = f"openclip:{arch}/{weights};pre={pre}"

    @property
    def model_identity(self) -> str:
        return self._identity

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> np.ndarray:
        pixels = pixels.to(self.device, dtype=self.dtype, non_blocking=True)
        return self.model.encode_image(pixels).float().cpu().numpy()

    @torch.inference_mode()
    def encode_texts_both(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        out = []
        for start in range(0, len(texts), 256):
            tokens = self.tokenizer(list(texts[start:start + 256])).to(self.device)
            out.append(self.model.encode_text(tokens).float().cpu().numpy())
        feats = np.concatenate(out) if out else np.zeros((0, self.text_dim), np.float32)
        return feats, feats  # CLIP's towers are aligned: native == image space


def create_openclip(name: str, device: str = "cpu", allow_files: bool = True) -> OpenClipEncoder:
    arch, pretrained = parse_name(name)
    return OpenClipEncoder(arch, pretrained, device=device, allow_files=allow_files)


@BACKBONES.register("tiny-clip")
def create_tiny(cache_dir=None, device="cpu") -> OpenClipEncoder:
    """Tiny random open_clip ViT (32 px, 32-d) for tests and smoke runs; no weights, no network."""
    return OpenClipEncoder(TINY_ARCH, None, device=device)


def list_pretrained() -> list[str]:
    import open_clip

    return [f"{PREFIX}{arch}/{tag}" for arch, tag in open_clip.list_pretrained()]
