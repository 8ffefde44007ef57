"""Feature cache: encoder outputs computed once per (backbone identity, dataset, split, view).

Entries are safetensors + JSON manifests (see storage.py), written atomically; a hit does no encoder work.
"""
from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from . import __version__
from .datasets.base import SPLITS, Dataset, Split
from .encoders.base import Encoder
from .storage import ensure_writable_dir, load_arrays, save_arrays

VIEWS = ("center", "flip")  # the encoder's center crop; the same of the horizontally mirrored image (Lin et al.)


@dataclass(frozen=True)
class ImageFeatures:
    x: np.ndarray  # (N, D_img) float32
    labels: np.ndarray  # (N,) int64


@dataclass(frozen=True)
class TextFeatures:
    """Every class name in every template, encoded."""

    x: np.ndarray  # (M, D_text) float32, in image space when the backbone aligns them
    native: np.ndarray  # (M, D_native) the text tower's own output (unaligned for `lite`)
    labels: np.ndarray  # (M,) class of each prompt
    texts: list[str]

    def class_means(self) -> np.ndarray:
        """(C, D): per class the mean of its unit-norm template features, renormalised (CLIP's recipe)."""
        x = unit_rows(self.x)
        means = np.stack([x[self.labels == c].mean(0) for c in range(int(self.labels.max()) + 1)])
        return unit_rows(means)


@dataclass(frozen=True)
class DatasetFeatures:
    train: ImageFeatures
    val: ImageFeatures
    test: ImageFeatures
    text: TextFeatures
    classnames: list[str]
    train_flip: ImageFeatures | None = None  # the train split's mirrored view, when asked for
    index_dir: Path | None = None  # published few-shot index files, if the dataset has them
    train_paths: list[str] | None = None  # image paths of the train split, to check index files against
    val_paths: list[str] | None = None

    def few_shot(self, shots: int, seed: int):
        """The published split when its index file exists, else crossgate's sampler."""
        from .datasets.fewshot import choose_few_shot

        return choose_few_shot(self.train.labels, self.val.labels, shots, seed, self.classnames, self.index_dir,
                               self.train_paths, self.val_paths)

    def split(self, name: str) -> ImageFeatures:
        return getattr(self, name)

    def train_views(self) -> list[str]:
        return ["center", "flip"] if self.train_flip is not None else ["center"]

    def few_shot_train(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels of the chosen training images, in every cached view (flipped copies after)."""
        views = [self.train] + ([self.train_flip] if self.train_flip is not None else [])
        return (np.concatenate([v.x[indices] for v in views]), np.concatenate([v.labels[indices] for v in views]))


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; an all-zero row stays zero instead of dividing by zero."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def _versions() -> dict:
    return {"crossgate": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


class _PixelDataset(torch.utils.data.Dataset):
    def __init__(self, split: Split, preprocess, view: str):
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}; available: {', '.join(VIEWS)}")
        self.split, self.preprocess, self.flip = split, preprocess, view == "flip"

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        image = self.split.load_image(i)
        return self.preprocess(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if self.flip else image)


def encode_split(encoder: Encoder, split: Split, batch_size: int = 64, workers: int = 0,
                 progress: bool = True, desc: str = "", view: str = "center") -> np.ndarray:
    loader = torch.utils.data.DataLoader(_PixelDataset(split, encoder.preprocess, view), batch_size=batch_size,
                                         num_workers=workers, pin_memory=encoder.device.startswith("cuda"))
    out = np.zeros((len(split), encoder.image_dim), dtype=np.float32)
    done = 0
    with tqdm(total=len(split), desc=desc, unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for pixels in loader:
            out[done:done + len(pixels)] = encoder.encode_images(pixels)
            done += len(pixels)
            bar.update(len(pixels))
    return out


class FeatureCache:
    def __init__(self, root: Path, batch_size: int = 64, workers: int = 0, progress: bool = True):
        self.root = Path(root).expanduser()
        self.batch_size, self.workers, self.progress = batch_size, workers, progress

    def _stem(self, kind: str, fields: dict) -> Path:
        key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]
        return self.root / "features" / kind / key

    def image_features(self, encoder: Encoder, dataset: Dataset, split: str, view: str = "center") -> ImageFeatures:
        fields = {"encoder": encoder.identity, "dataset": dataset.identity, "split": split, "view": view}
        stem = self._stem("image", fields)
        hit = load_arrays(stem)
        items = dataset.split(split)
        if hit is None:
            ensure_writable_dir(self.root, "cache directory", "--cache-dir or CROSSGATE_CACHE")
            dataset.ensure_images()
            x = encode_split(encoder, items, self.batch_size, self.workers, self.progress,
                             desc=f"{dataset.name}/{split}" + ("/flip" if view == "flip" else ""), view=view)
            save_arrays(stem, {"x": x, "labels": items.labels}, {"kind": "image", "key": fields,
                                                                 "versions": _versions()})
            return ImageFeatures(x=x, labels=items.labels)
        return ImageFeatures(x=hit[0]["x"], labels=hit[0]["labels"])

    def text_features(self, encoder: Encoder, dataset: Dataset) -> TextFeatures:
        texts, labels = dataset.prompts()
        fields = {"encoder": encoder.identity, "texts": texts}
        stem = self._stem("text", fields)
        hit = load_arrays(stem)
        if hit is None:
            ensure_writable_dir(self.root, "cache directory", "--cache-dir or CROSSGATE_CACHE")
            aligned, native = encoder.encode_texts_both(texts)
            save_arrays(stem, {"x": aligned, "native": native}, {"kind": "text", "key": fields,
                                                                 "versions": _versions()})
        else:
            aligned, native = hit[0]["x"], hit[0]["native"]
        return TextFeatures(x=aligned, native=native, labels=labels, texts=texts)

    def features(self, encoder: Encoder, dataset: Dataset, flip: bool = False) -> DatasetFeatures:
        """Every split's center view, the class texts, and with flip=True the mirrored training images."""
        splits = {s: self.image_features(encoder, dataset, s) for s in SPLITS}
        train_flip = self.image_features(encoder, dataset, "train", view="flip") if flip else None
        return DatasetFeatures(**splits, train_flip=train_flip, text=self.text_features(encoder, dataset),
                               classnames=list(dataset.classnames), index_dir=dataset.index_dir,
                               train_paths=dataset.split("train").paths, val_paths=dataset.split("val").paths)
