"""Datasets in the CoOp layout that Lin et al. evaluate on: a split file of (relpath, label, classname).

    <root>/oxford_pets/images/...            <root>/oxford_pets/split_zhou_OxfordPets.json
    <root>/food-101/images/<class>/...       <root>/food-101/split_zhou_Food101.json
    ... the other CoOp datasets as in CoOp's DATASETS.md (SPECS below)

Class names come from the split file, '_' becoming ' '; templates are CoOp's hand-crafted ones, which Lin
et al. use (ImageNet: their seven). What data/downloads.json lists downloads on first use (the split and
index files of Lin et al.'s repository, Pets' and Food-101's images); the rest is read from disk.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..jsonio import BadJSON, read_json
from .base import DATASETS, Dataset, Split, digest_files, files_split, inside
from .download import ensure_files, ensure_indices, remotes

log = logging.getLogger("crossgate")


@dataclass(frozen=True)
class CoopSpec:
    name: str  # registry name, also the folder of its published few-shot index files
    folder: str  # under the data root
    split_file: str
    template: str | tuple[str, ...]  # the prompt template(s) Lin et al. use for it
    images: str = "images"  # the folder the split file's relative paths start from, under `folder`
    how: str = ""  # where the data comes from, when the user supplies it


# Lin et al.'s ImageNet prompts (engine/templates/hand_crafted.py: the 7 that Tip-Adapter selected)
IMAGENET_TEMPLATES = ("itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
                      "a {} in a video game.", "art of the {}.", "a photo of the small {}.")


SPECS = {spec.name: spec for spec in (
    CoopSpec("oxford_pets", "oxford_pets", "split_zhou_OxfordPets.json", "a photo of a {}, a type of pet."),
    CoopSpec("food101", "food-101", "split_zhou_Food101.json", "a photo of {}, a type of food."),
    CoopSpec("caltech101", "caltech-101", "split_zhou_Caltech101.json", "a photo of a {}.", "101_ObjectCategories"),
    CoopSpec("oxford_flowers", "oxford_flowers", "split_zhou_OxfordFlowers.json",
             "a photo of a {}, a type of flower.", "jpg"),
    CoopSpec("stanford_cars", "stanford_cars", "split_zhou_StanfordCars.json", "a photo of a {}.", ".",
             how="Stanford Cars is supplied by you (its official URL is gone): put the folders cars_train/ and "
                 "cars_test/ of the original release in DATA_ROOT/stanford_cars, beside the split file"),
    CoopSpec("dtd", "dtd", "split_zhou_DescribableTextures.json", "{} texture."),
    CoopSpec("eurosat", "eurosat", "split_zhou_EuroSAT.json", "a centered satellite photo of {}.", "2750"),
    CoopSpec("sun397", "sun397", "split_zhou_SUN397.json", "a photo of a {}.", "SUN397"),
    CoopSpec("ucf101", "ucf101", "split_zhou_UCF101.json", "a photo of a person doing {}.", "UCF-101-midframes"),
    CoopSpec("imagenet", "imagenet", "split_ImageNet.json", IMAGENET_TEMPLATES, "images",
             how="ImageNet is supplied by you: the official train and val sets under DATA_ROOT/imagenet/images/train "
                 "and images/val (1,000 folders n*), and Lin et al.'s split_ImageNet.json (their DATASETS.md links "
                 "it) in DATA_ROOT/imagenet; its val set is the test split"),
)}


class CoopDataset(Dataset):
    def __init__(self, spec: CoopSpec, root: Path, download: bool = True, progress: bool = True):
        self.spec = spec
        self.name = spec.name
        self.root = Path(root)
        self.folder = self.root / spec.folder
        self.download, self.progress = download, progress
        split_path = self.folder / spec.split_file
        if download:
            ensure_files(spec.name, self.root, "split", progress)
            if not self.index_dir.is_dir():
                for problem in ensure_indices(spec.name, self.root, progress):
                    log.warning("%s; without it crossgate samples that few-shot split itself", problem)
        self._require("split")
        if not split_path.is_file():
            raise UserError(f"{spec.name} needs the split file {split_path} and its images under "
                            f"{self.folder / spec.images}; {spec.how or 'see CoOp DATASETS.md'}: put them there or "
                            "point --data-root at a folder that has them")
        try:
            self._items = read_json(split_path)
        except (OSError, BadJSON) as err:
            raise UserError(f"{split_path} is not valid JSON ({err}); download it again") from None
        self.classnames = _check_split(self._items, split_path)
        self.templates = [spec.template] if isinstance(spec.template, str) else list(spec.template)
        self._digest = digest_files([split_path])

    def _require(self, role: str) -> None:
        missing = [f"{r.target(self.root)} (from {r.url})" for r in remotes(self.name)[0]
                   if r.role == role and not r.target(self.root).exists()]
        if missing:
            raise UserError(f"{self.name} is missing {'; '.join(missing)} and downloads are off (--offline or "
                            "CROSSGATE_OFFLINE=1); put them there or point --data-root at a folder that has them")

    def ensure_images(self) -> None:
        """Download the images on first use (the split file alone is enough to list and sample them)."""
        if self.download:
            ensure_files(self.name, self.root, "images", self.progress)
        self._require("images")
        if not (self.folder / self.spec.images).is_dir():
            raise UserError(f"{self.name}'s images belong in {self.folder / self.spec.images} (see CoOp's "
                            "DATASETS.md); put them there or point --data-root at a folder that has them")

    @property
    def index_dir(self) -> Path:
        """Where Lin et al.'s published few-shot index files are looked for."""
        return self.root / "indices" / self.spec.name

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise UserError(f"unknown split {name!r}; available: train, val, test")
        items = self._items[name]
        images = self.folder / self.spec.images
        return files_split(images, [str(relpath) for relpath, _, _ in items], [int(label) for _, label, _ in items],
                           f"the {self.name} images belong in {images}")


def _check_split(items, path: Path) -> list[str]:
    """The class names of a CoOp split file, after checking its whole shape: three lists of
    [relative image path, integer label, class name], labels 0..C-1 all present in train, one name each."""
    def bad(why: str):
        return UserError(f"{path} is not a CoOp split file: {why}; download it again or fix it")

    if not isinstance(items, dict) or not all(isinstance(items.get(k), list) for k in ("train", "val", "test")):
        raise bad("it needs 'train', 'val' and 'test' lists")
    names: dict[int, str] = {}
    for split in ("train", "val", "test"):
        for n, entry in enumerate(items[split]):
            if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str) and entry[0]
                    and isinstance(entry[1], int) and not isinstance(entry[1], bool) and entry[1] >= 0
                    and isinstance(entry[2], str) and entry[2].strip()):
                raise bad(f"{split} entry {n} is {entry!r}, not [image path, label, class name]")
            if not inside(entry[0]):
                raise bad(f"{split} entry {n} names {entry[0]!r}, which is outside the dataset's images folder "
                          "(paths are relative to it, without '..')")
            if split == "train" and names.setdefault(entry[1], entry[2]) != entry[2]:
                raise bad(f"label {entry[1]} is named both {names[entry[1]]!r} and {entry[2]!r}")
    missing = sorted(set(range(max(names, default=-1) + 1)) - set(names))
    if not names or missing:
        raise bad(f"the train labels must be 0..C-1, but {missing[:5] or 'all'} have no training image")
    unknown = sorted({e[1] for s in ("val", "test") for e in items[s]} - set(names))
    if unknown:
        raise bad(f"labels {unknown[:5]} appear in val / test but not in train")
    return [names[i].replace("_", " ") for i in range(len(names))]


def _register(spec: CoopSpec):
    @DATASETS.register(spec.name, help=f"{spec.name} on the CoOp split (DATA_ROOT/{spec.folder}/{spec.split_file})",
                       tags=("coop",))
    def factory(settings=None):
        if settings is None:
            from ..settings import Settings

            settings = Settings()
        return CoopDataset(spec, settings.data_root, download=not settings.offline, progress=settings.progress)

    return factory


for _spec in SPECS.values():
    _register(_spec)
