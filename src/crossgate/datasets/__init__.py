from . import fashion_mnist  # noqa: F401  (registers datasets)
from .base import DATASETS, SPLITS, ArrayDataset, Dataset, Split
from .fewshot import FewShotSplit, few_shot_split, sample_few_shot


def load_dataset(name: str, settings=None) -> Dataset:
    return DATASETS.create(name, settings)


def list_datasets() -> list[str]:
    return DATASETS.names()


__all__ = [
    "DATASETS",
    "SPLITS",
    "ArrayDataset",
    "Dataset",
    "FewShotSplit",
    "Split",
    "few_shot_split",
    "list_datasets",
    "load_dataset",
    "sample_few_shot",
]
