from . import fashion_mnist, coop  # noqa: F401, I001  (registers datasets; this order is the listing order)
from .base import DATASETS, SPLITS, ArrayDataset, Dataset, Split
from .fewshot import FewShotSplit, choose_few_shot, few_shot_split, read_index_file, sample_few_shot


def load_dataset(name: str, settings=None) -> Dataset:
    return DATASETS.create(name, settings)


def list_datasets() -> list[str]:
    return DATASETS.names()


__all__ = ["DATASETS", "SPLITS", "ArrayDataset", "Dataset", "Split", "FewShotSplit", "choose_few_shot",
           "few_shot_split", "read_index_file", "sample_few_shot", "load_dataset", "list_datasets"]
