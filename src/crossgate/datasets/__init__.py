from . import fashion_mnist, coop, fgvc_aircraft, imagenet_shifts  # noqa: F401, I001  (registers datasets; this order is the listing order)
from pathlib import Path

from ..errors import UserError
from . import imagefolder
from .base import DATASETS, SPLITS, ArrayDataset, Dataset, Split
from .fewshot import FewShotSplit, choose_few_shot, few_shot_split, read_index_file, sample_few_shot


def load_dataset(name: str, settings=None, templates: list[str] | None = None, prompts: str | None = None) -> Dataset:
    """A registered dataset by name, or your own images as imagefolder:PATH (with optional prompt templates);
    `prompts`: 'templates' (or None), 'cupl' or a description bank file (datasets.prompts)."""
    if prompts not in (None, "templates") and templates:
        raise UserError("--template and --prompts name two prompt sources; give one")
    if name.startswith(imagefolder.PREFIX):
        if not name[len(imagefolder.PREFIX):].strip():  # Path("") would be the current folder
            raise UserError("imagefolder: needs a path, e.g. imagefolder:~/photos (one sub-folder per class)")
        dataset = imagefolder.ImageFolderDataset(Path(name[len(imagefolder.PREFIX):]), templates)
    elif name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; available: {', '.join(list_datasets())}")
    elif templates:
        raise UserError(f"--template applies to imagefolder:PATH datasets; {name} uses its published templates")
    else:
        dataset = DATASETS.create(name, settings)
    if prompts not in (None, "templates"):
        _use_prompts(dataset, prompts, settings)
    return dataset


def _use_prompts(dataset: Dataset, prompts: str, settings) -> None:
    from .download import fetch, prompt_remote
    from .prompts import file_digest, read_bank

    if prompts == "cupl":
        remote = prompt_remote(dataset.name)
        if remote is None:
            raise UserError(f"no CuPL description bank is published for {dataset.name}; pass your own with "
                            "--prompts FILE.json ({class name: [sentence, ...]})")
        from ..settings import Settings

        settings = settings or Settings()
        path = Path(settings.data_root) / remote.path
        if settings.offline and not path.exists():
            raise UserError(f"the CuPL bank of {dataset.name} is not at {path} and downloads are off; put "
                            f"{remote.url} there or allow downloads")
        fetch(remote, path, progress=False)
        source = f"the CuPL bank of {dataset.name}"
    else:
        path = Path(prompts).expanduser()
        source = str(path)
    dataset.use_bank(read_bank(path), source)
    dataset.prompt_source = {"prompts": "cupl" if prompts == "cupl" else f"file:{path.name}",
                             "sha256": file_digest(path)}


def list_datasets() -> list[str]:
    return DATASETS.names() + [f"{imagefolder.PREFIX}PATH"]


__all__ = ["DATASETS", "SPLITS", "ArrayDataset", "Dataset", "Split", "FewShotSplit", "choose_few_shot",
           "few_shot_split", "read_index_file", "sample_few_shot", "load_dataset", "list_datasets"]
