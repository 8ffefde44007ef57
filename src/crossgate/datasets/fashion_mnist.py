"""Fashion-MNIST (Zalando, MIT licence): an embedded class-balanced subset, and the full 70,000 images."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import DATASETS, ArrayDataset, digest_files
from .idx import read_idx

CLASSNAMES = ["t-shirt", "trousers", "pullover", "dress", "coat",
              "sandal", "shirt", "sneaker", "bag", "ankle boot"]
PROMPT_NAMES = [n if n != "trousers" else "pair of trousers" for n in CLASSNAMES]  # "a photo of a trousers."
# Chosen before any measurement; never tuned on test accuracy.
TEMPLATES = [
    "a photo of a {}.",
    "a black and white photo of a {}.",
    "a low resolution photo of a {}.",
    "a photo of a {}, a type of clothing.",
]
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FULL_VAL_PER_CLASS = 500  # held out of the official training set as the validation split
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def _read_pair(folder: Path, images: str, labels: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = read_idx(folder / images), read_idx(folder / labels)
    if len(x) != len(y):
        raise UserError(f"{folder}: {images} has {len(x)} images but {labels} has {len(y)} labels; "
                        "re-install the data")
    return x, y.astype(np.int64)


@DATASETS.register("fashion-mnist")
def embedded(settings=None) -> ArrayDataset:
    """Embedded default: 10 classes x (48 train-pool, 16 val-pool, 200 test) Fashion-MNIST images, offline."""
    folder = Path(str(resources.files("crossgate") / "data" / "fashion_mnist"))
    arrays = {s: _read_pair(folder, f"{s}-images-idx3-ubyte.gz", f"{s}-labels-idx1-ubyte.gz")
              for s in ("train", "val", "test")}
    digest = digest_files(sorted(folder.glob("*.gz")))
    return _with_prompt_names(ArrayDataset("fashion-mnist", CLASSNAMES, TEMPLATES, arrays, digest))


def _with_prompt_names(dataset: ArrayDataset) -> ArrayDataset:
    """Our templates in English: "a photo of an ankle boot.", "a photo of a pair of trousers."."""
    dataset.own_templates, dataset.prompt_names = True, PROMPT_NAMES
    return dataset


def find_full_dir(settings) -> Path:
    candidates = []
    if settings is not None:
        candidates.append(Path(settings.data_root) / "fashion-mnist")
    candidates.append(DEBIAN_DIR)
    for folder in candidates:
        if all((folder / f).is_file() for pair in FILES.values() for f in pair):
            return folder
    raise UserError(
        "fashion-mnist-full needs the four Fashion-MNIST IDX files; install them with "
        "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or put "
        f"{', '.join(f for pair in FILES.values() for f in pair)} in {candidates[0]}"
    )


def holdout_validation(labels: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """A boolean mask marking `per_class` images of every class, drawn with a fixed seed."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        mask[rng.choice(members, size=min(per_class, len(members) // 2), replace=False)] = True
    return mask


@DATASETS.register("fashion-mnist-full")
def full(settings=None) -> ArrayDataset:
    """All 70,000 Fashion-MNIST images (Debian's dataset-fashion-mnist or DATA_ROOT/fashion-mnist)."""
    folder = find_full_dir(settings)
    train_x, train_y = _read_pair(folder, *FILES["train"])
    test_x, test_y = _read_pair(folder, *FILES["test"])
    val = holdout_validation(train_y, FULL_VAL_PER_CLASS)
    arrays = {"train": (train_x[~val], train_y[~val]), "val": (train_x[val], train_y[val]),
              "test": (test_x, test_y)}
    digest = digest_files([folder / f for pair in FILES.values() for f in pair])
    return _with_prompt_names(ArrayDataset("fashion-mnist-full", CLASSNAMES, TEMPLATES, arrays, digest))
