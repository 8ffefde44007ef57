"""`fgvc_aircraft`: FGVC-Aircraft (Maji et al., 2013) in its official layout, as Lin et al. and CoOp read it.

    DATA_ROOT/fgvc_aircraft/images/<id>.jpg
    DATA_ROOT/fgvc_aircraft/variants.txt                     the 100 variants, one per line: the class order
    DATA_ROOT/fgvc_aircraft/images_variant_{train,val,test}.txt   lines "<id> <variant>"

(the contents of the archive's fgvc-aircraft-2013b/data). No CoOp split file exists for it: the official
train / val / test lists are the splits, as in Lin et al.'s engine/datasets/fgvc_aircraft.py. Their
few-shot index files are used where present (DATA_ROOT/indices/fgvc_aircraft/).
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..errors import UserError
from .base import DATASETS, Dataset, Split, digest_files, files_split
from .download import ensure_files, ensure_indices

log = logging.getLogger("crossgate")
NAME, FOLDER = "fgvc_aircraft", "fgvc_aircraft"
TEMPLATE = "a photo of a {}, a type of aircraft."  # Lin et al.'s (and CoOp's)
SPLIT_FILES = {s: f"images_variant_{s}.txt" for s in ("train", "val", "test")}


class AircraftDataset(Dataset):
    def __init__(self, root: Path, download: bool = True, progress: bool = True):
        self.name = NAME
        self.root = Path(root)
        self.folder = self.root / FOLDER
        self.download, self.progress = download, progress
        if download:  # the official archive holds the lists too: it is fetched when the dataset is opened
            ensure_files(NAME, self.root, "split", progress)
        if download and not self.index_dir.is_dir():
            for problem in ensure_indices(NAME, self.root, progress):
                log.warning("%s; without it crossgate samples that few-shot split itself", problem)
        needed = [self.folder / "variants.txt", *(self.folder / f for f in SPLIT_FILES.values())]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            raise UserError(f"fgvc_aircraft needs {', '.join(missing)} and the images in {self.folder / 'images'}: "
                            "extract fgvc-aircraft-2013b.tar.gz from the publisher (robots.ox.ac.uk/~vgg/data/"
                            f"fgvc-aircraft) and move the contents of its data/ folder to {self.folder}")
        self.classnames = self._lines(self.folder / "variants.txt")
        if len(set(self.classnames)) != len(self.classnames) or len(self.classnames) < 2:
            raise UserError(f"{self.folder / 'variants.txt'} must list at least two distinct variants, one per line")
        label = {name: i for i, name in enumerate(self.classnames)}
        self._items = {}
        for split, file in SPLIT_FILES.items():
            items = []
            for n, line in enumerate(self._lines(self.folder / file), 1):
                image, _, variant = line.partition(" ")
                if not image or "/" in image or image.startswith(".") or variant not in label:
                    raise UserError(f"{self.folder / file} line {n} ({line!r}) is not '<image id> <variant of "
                                    "variants.txt>'; extract the archive again")
                items.append((f"{image}.jpg", label[variant]))
            self._items[split] = items
        missing_classes = sorted(set(range(len(self.classnames))) - {lab for _, lab in self._items["train"]})
        if missing_classes:
            raise UserError(f"variant {self.classnames[missing_classes[0]]!r} has no training image in "
                            f"{self.folder / SPLIT_FILES['train']}; extract the archive again")
        self.templates = [TEMPLATE]
        self._digest = digest_files(needed)

    @staticmethod
    def _lines(path: Path) -> list[str]:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise UserError(f"{path} is not UTF-8 text; extract the archive again") from None
        return [line.strip() for line in text.splitlines() if line.strip()]

    @property
    def index_dir(self) -> Path:
        return self.root / "indices" / NAME

    def ensure_images(self) -> None:
        if self.download:
            ensure_files(NAME, self.root, "images", self.progress)
        if not (self.folder / "images").is_dir():
            raise UserError(f"fgvc_aircraft's images belong in {self.folder / 'images'} (the archive's data/images)")

    def split(self, name: str) -> Split:
        if name not in self._items:
            raise UserError(f"unknown split {name!r}; available: train, val, test")
        items = self._items[name]
        images = self.folder / "images"
        return files_split(images, [rel for rel, _ in items], [lab for _, lab in items],
                           f"the fgvc_aircraft images belong in {images}")


@DATASETS.register(NAME, help=f"FGVC-Aircraft, 100 variants, official splits (DATA_ROOT/{FOLDER}: the archive's data/)",
                   tags=("coop",))
def create(settings=None):
    if settings is None:
        from ..settings import Settings

        settings = Settings()
    return AircraftDataset(settings.data_root, download=not settings.offline, progress=settings.progress)
