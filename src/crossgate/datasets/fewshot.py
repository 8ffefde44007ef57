"""The one few-shot sampler: class-balanced, deterministic, and never touching the test split."""
from __future__ import annotations

from dataclasses import dataclass

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


def few_shot_split(train_labels: np.ndarray, val_labels: np.ndarray, shots: int, seed: int,
                   classnames: list[str] | None = None) -> FewShotSplit:
    """Training shots from the train split, min(shots, 4) per class from the val split."""
    train = sample_few_shot(train_labels, shots, seed, classnames, "train")
    val = sample_few_shot(val_labels, min(shots, VAL_SHOTS_CAP), seed, classnames, "val")
    return FewShotSplit(train=train, val=val, source="crossgate-sampler")
