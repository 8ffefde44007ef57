from . import fashion_mnist, coop, fgvc_aircraft, imagenet_shifts  # noqa: F401, I001  (registers datasets; this order is the listing order)
from pathlib import Path

from ..errors import UserError
from . import imagefolder
from .base import DATASETS, SPLITS, ArrayDataset, Dataset, Split
from .fewshot import FewShotSplit, choose_few_shot, few_shot_split, read_index_file, sample_few_shot


def load_dataset(name: str, settings=None, templates: list[str] | None = None) -> Dataset:
    """A registered dataset by name, or your own images as imagefolder:PATH (with optional prompt templates)."""
    if name.startswith(imagefolder.PREFIX):
        if not name[len(imagefolder.PREFIX):].strip():  # Path("") would be the current folder
            raise UserError("imagefolder: needs a path, e.g. imagefolder:~/photos (one sub-folder per class)")
        return imagefolder.ImageFolderDataset(Path(name[len(imagefolder.PREFIX):]), templates)
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; available: {', '.join(list_datasets())}")
    if templates:
        raise UserError(f"--template applies to imagefolder:PATH datasets; {name} uses its published templates")
    return DATASETS.create(name, settings)


def list_datasets() -> list[str]:
    return DATASETS.names() + [f"{imagefolder.PREFIX}PATH"]


__all__ = ["DATASETS", "SPLITS", "ArrayDataset", "Dataset", "Split", "FewShotSplit", "choose_few_shot",
           "few_shot_split", "read_index_file", "sample_few_shot", "load_dataset", "list_datasets"]
