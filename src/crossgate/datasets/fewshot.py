"""The one few-shot sampler: class-balanced, deterministic, and never touching the test split."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError

VAL_SHOTS_CAP = 4  # Lin et al.: the few-shot validation set has min(shots, 4) images per class


@dataclass(frozen=True)
class FewShotSplit:
    train: np.ndarray  # indices into the dataset's train split
    val: np.ndarray  # indices into the dataset's val split
    source: str  # "crossgate-sampler" or the published index file it came from


def sample_few_shot(labels: np.ndarray, shots: int, seed: int, classnames: list[str] | None = None,
                    split_name: str = "train") -> np.ndarray:
    """`shots` indices per class, sorted by class then draw order; the same for the same (labels, shots, seed)."""
    labels = np.asarray(labels)
    if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1:
        raise UserError(f"shots must be a positive integer, got {shots!r}")
    classes = np.unique(labels)
    short = [int(c) for c in classes if np.sum(labels == c) < shots]
    if short:
        names = [classnames[c] if classnames else str(c) for c in short]
        raise UserError(f"{len(short)} classes have fewer than {shots} images in the {split_name} split: "
                        f"{', '.join(names)}; use fewer shots or add images")
    rng = np.random.default_rng([int(seed), int(shots)])
    picks = [rng.choice(np.flatnonzero(labels == c), size=shots, replace=False) for c in classes]
    return np.concatenate(picks).astype(np.int64)


def few_shot_split(train_labels: np.ndarray, val_labels: np.ndarray, shots: int | str, seed: int,
                   classnames: list[str] | None = None) -> FewShotSplit:
    """Training shots from the train split, min(shots, 4) per class from the val split (fewer when a small
    dataset of your own has fewer validation images per class). shots="all": every train and val image."""
    if shots == "all":
        return FewShotSplit(train=np.arange(len(train_labels)), val=np.arange(len(val_labels)), source="all-images")
    train = sample_few_shot(train_labels, shots, seed, classnames, "train")
    present = np.bincount(np.asarray(val_labels, dtype=np.int64), minlength=int(np.max(train_labels)) + 1)
    val_shots = max(1, min(shots, VAL_SHOTS_CAP, int(present.min())))
    val = sample_few_shot(val_labels, val_shots, seed, classnames, "val")
    return FewShotSplit(train=train, val=val, source="crossgate-sampler")


def _relative_to_images(impath: str) -> str:
    """'./data/oxford_pets/images/Abyssinian_141.jpg' -> 'Abyssinian_141.jpg' (Lin et al.'s index files)."""
    return impath.split("/images/", 1)[1] if "/images/" in impath else impath


def read_index_file(path: Path, train_paths: list[str] | None = None,
                    val_paths: list[str] | None = None) -> FewShotSplit:
    """Lin et al.'s shot_K-seed_S.json: indices into the split's train and val lists. When the split's
    paths are given, every index must name the image the file says it does."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        parts = {name: (np.asarray(data[name]["indices"], dtype=np.int64), data[name]["data"])
                 for name in ("train", "val")}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise UserError(f"{path} is not a few-shot index file ({err}); download it again or remove it") from err
    for name, paths in (("train", train_paths), ("val", val_paths)):
        indices, entries = parts[name]
        if paths is None:
            continue
        if len(indices) and (indices.min() < 0 or indices.max() >= len(paths)):
            raise UserError(f"{path}: {name} index out of range for a split of {len(paths)} images; "
                            "the index file does not belong to this split file")
        wrong = [(i, e["impath"]) for i, e in zip(indices, entries, strict=False)
                 if _relative_to_images(e["impath"]) != paths[i]]
        if wrong:
            i, impath = wrong[0]
            raise UserError(f"{path}: {name} index {i} is {paths[i]!r} in the split file but {impath!r} in the "
                            f"index file ({len(wrong)} such); the index file does not belong to this split file")
    return FewShotSplit(train=parts["train"][0], val=parts["val"][0], source=f"published:{path.name}")


def choose_few_shot(train_labels: np.ndarray, val_labels: np.ndarray, shots: int | str, seed: int,
                    classnames: list[str] | None = None, index_dir: Path | None = None,
                    train_paths: list[str] | None = None, val_paths: list[str] | None = None) -> FewShotSplit:
    """The published few-shot split when `index_dir/shot_K-seed_S.json` exists, otherwise our sampler."""
    if index_dir is not None and shots != "all":
        published = Path(index_dir) / f"shot_{shots}-seed_{seed}.json"
        if published.is_file():
            return read_index_file(published, train_paths, val_paths)
    return few_shot_split(train_labels, val_labels, shots, seed, classnames)
