"""The one few-shot sampler: class-balanced, deterministic, and never touching the test split."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..jsonio import read_json

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


def read_index_file(path: Path, train_paths: list[str] | None = None, val_paths: list[str] | None = None,
                    shots: int | None = None, train_labels=None, val_labels=None) -> FewShotSplit:
    """Lin et al.'s shot_K-seed_S.json: indices into the split's train and val lists, checked whole: each
    index an integer in range, none repeated, as many indices as entries, and (where the split's paths and
    labels are given) every entry naming the image and class of its index, with `shots` images per class in
    train and min(shots, 4) in val."""
    path = Path(path)

    def bad(why: str):
        return UserError(f"{path} is not a few-shot index file of this split: {why}; download it again or "
                         "remove it")

    try:
        data = read_json(path)
    except (OSError, ValueError) as err:
        raise bad(str(err)) from None
    if not isinstance(data, dict):
        raise bad("it must be an object with 'train' and 'val'")
    parts = {}
    for name, paths, labels in (("train", train_paths, train_labels), ("val", val_paths, val_labels)):
        part = data.get(name)
        if not isinstance(part, dict) or not isinstance(part.get("indices"), list) \
                or not isinstance(part.get("data"), list):
            raise bad(f"{name!r} needs 'indices' and 'data' lists")
        indices, entries = part["indices"], part["data"]
        if len(indices) != len(entries):
            raise bad(f"{name} has {len(indices)} indices but {len(entries)} entries")
        kinds = [i for i in indices if isinstance(i, bool) or not isinstance(i, int)]
        if kinds:
            raise bad(f"{name} index {kinds[0]!r} is not an integer")
        repeated = sorted({i for i in indices if indices.count(i) > 1}) if len(set(indices)) != len(indices) else []
        if repeated:
            raise bad(f"{name} lists index {repeated[0]} more than once")
        for i, entry in zip(indices, entries, strict=True):
            if not isinstance(entry, dict) or not isinstance(entry.get("impath"), str):
                raise bad(f"{name} entry of index {i} is {entry!r}, not an object with an 'impath'")
        if paths is not None:
            if indices and (min(indices) < 0 or max(indices) >= len(paths)):
                raise bad(f"{name} index out of range for a split of {len(paths)} images")
            wrong = [(i, e["impath"]) for i, e in zip(indices, entries, strict=True)
                     if _relative_to_images(e["impath"]) != paths[i]]
            if wrong:
                i, impath = wrong[0]
                raise bad(f"{name} index {i} is {paths[i]!r} in the split file but {impath!r} in the index file "
                          f"({len(wrong)} such): the index file does not belong to this split file")
        if labels is not None and shots is not None:
            expected = shots if name == "train" else min(shots, VAL_SHOTS_CAP)
            counts = np.bincount(np.asarray(labels, dtype=np.int64)[indices], minlength=int(np.max(labels)) + 1)
            off = [c for c in range(len(counts)) if counts[c] != expected]
            if off:
                raise bad(f"{name} has {counts[off[0]]} images of class {off[0]}, not {expected} "
                          f"({len(off)} classes off)")
        parts[name] = np.asarray(indices, dtype=np.int64)
    return FewShotSplit(train=parts["train"], val=parts["val"], source=f"published:{path.name}")


def choose_few_shot(train_labels: np.ndarray, val_labels: np.ndarray, shots: int | str, seed: int,
                    classnames: list[str] | None = None, index_dir: Path | None = None,
                    train_paths: list[str] | None = None, val_paths: list[str] | None = None,
                    labels_are_positions: bool = True) -> FewShotSplit:
    """The published few-shot split when `index_dir/shot_K-seed_S.json` exists, otherwise our sampler."""
    if index_dir is not None and shots != "all":
        published = Path(index_dir) / f"shot_{shots}-seed_{seed}.json"
        if published.is_file():
            labels = (train_labels, val_labels) if labels_are_positions else (None, None)
            return read_index_file(published, train_paths, val_paths, shots, *labels)
    return few_shot_split(train_labels, val_labels, shots, seed, classnames)
