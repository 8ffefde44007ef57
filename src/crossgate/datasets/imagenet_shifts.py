"""ImageNet's four shift sets, test only, in the layout of Lin et al.'s and CoOp's DATASETS.md:

    DATA_ROOT/imagenetv2/imagenetv2-matched-frequency-format-val/<0..999>/*.jpeg   + classnames.txt
    DATA_ROOT/imagenet-sketch/images/n*/                                           + classnames.txt
    DATA_ROOT/imagenet-adversarial/imagenet-a/n*/   (200 of the 1,000 classes)     + classnames.txt
    DATA_ROOT/imagenet-rendition/imagenet-r/n*/     (200 of the 1,000 classes)     + classnames.txt

classnames.txt is ImageNet's (lines "<wnid> <name>", the 1,000 classes in ImageNet's label order). Labels
are ImageNet's class indices; `classes` lists the ones a set holds, so that a model fitted on ImageNet is
scored with its logits restricted to them (as Lin et al. and CoOp do for -A and -R). A shift set has only a
test split: `crossgate bench --dataset imagenet --shift ...` scores every fitted model on it without
refitting. None of them is downloaded: the user supplies the folders.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import DATASETS, Dataset, Split, digest_files, files_split
from .imagefolder import EXTENSIONS, hidden


@dataclass(frozen=True)
class ShiftSpec:
    name: str
    folder: str  # under the data root
    images: str  # under `folder`
    by_index: bool  # class folders named by ImageNet index (V2) instead of wnid
    source: str  # where the user gets it


SHIFTS = {s.name: s for s in (
    ShiftSpec("imagenet_v2", "imagenetv2", "imagenetv2-matched-frequency-format-val", True,
              "imagenetv2-matched-frequency.tar.gz (github.com/modestyachts/ImageNetV2)"),
    ShiftSpec("imagenet_sketch", "imagenet-sketch", "images", False,
              "github.com/HaohanWang/ImageNet-Sketch, its sketch/ folder renamed images/"),
    ShiftSpec("imagenet_a", "imagenet-adversarial", "imagenet-a", False,
              "imagenet-a.tar (github.com/hendrycks/natural-adv-examples)"),
    ShiftSpec("imagenet_r", "imagenet-rendition", "imagenet-r", False,
              "imagenet-r.tar (github.com/hendrycks/imagenet-r)"),
)}


def read_classnames(path: Path) -> tuple[list[str], list[str]]:
    """(wnids, names) of an ImageNet classnames.txt, in label order."""
    if not path.is_file():
        raise UserError(f"{path} is missing: copy ImageNet's classnames.txt there (lines '<wnid> <name>')")
    wnids, names = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        wnid, _, name = line.strip().partition(" ")
        if not name.strip():
            raise UserError(f"{path} line {n} ({line.strip()!r}) is not '<wnid> <class name>'")
        wnids.append(wnid)
        names.append(name.strip())
    if len(set(wnids)) != len(wnids) or not wnids:
        raise UserError(f"{path} must list distinct wnids, one class per line")
    return wnids, names


class ShiftDataset(Dataset):
    test_only = True

    def __init__(self, spec: ShiftSpec, root: Path):
        self.spec, self.name = spec, spec.name
        folder = Path(root) / spec.folder
        self.images = folder / spec.images
        if not self.images.is_dir():
            raise UserError(f"{spec.name} belongs in {self.images} (from {spec.source}), with ImageNet's "
                            f"classnames.txt in {folder}; put it there or point --data-root at a folder that has it")
        wnids, self.classnames = read_classnames(folder / "classnames.txt")
        label_of = {str(i): i for i in range(len(wnids))} if spec.by_index else {w: i for i, w in enumerate(wnids)}
        items = []
        for class_dir in sorted(d for d in self.images.iterdir() if d.is_dir() and not hidden(d.name)):
            if class_dir.name not in label_of:
                raise UserError(f"{class_dir} is not a class of {folder / 'classnames.txt'}; the folder and the "
                                "class list do not belong together")
            items += [(f"{class_dir.name}/{p.name}", label_of[class_dir.name]) for p in sorted(class_dir.iterdir())
                      if p.suffix.lower() in EXTENSIONS and p.is_file() and not hidden(p.name)]
        if not items:
            raise UserError(f"{self.images} holds no images in class folders")
        self._items = items
        self.classes = np.unique([label for _, label in items])  # ImageNet indices this set holds
        self.templates = []  # scored with the fitted model's own prompts; a shift set prompts nothing itself
        self._digest = digest_files([folder / "classnames.txt"]) + f"-{len(items)}"

    def split(self, name: str) -> Split:
        if name != "test":
            raise UserError(f"{self.name} is a test-only shift set of ImageNet; score models on it with "
                            f"`crossgate bench --dataset imagenet --shift {self.name}`")
        return files_split(self.images, [rel for rel, _ in self._items], [label for _, label in self._items],
                           f"the {self.name} images belong in {self.images}")


def _register(spec: ShiftSpec):
    @DATASETS.register(spec.name, help=f"ImageNet shift set, test only (bench --dataset imagenet --shift "
                                       f"{spec.name}); DATA_ROOT/{spec.folder}/{spec.images}, supplied by you",
                       tags=("shift", "shift-of:imagenet"))
    def factory(settings=None):
        if settings is None:
            from ..settings import Settings

            settings = Settings()
        return ShiftDataset(spec, settings.data_root)

    return factory


for _spec in SHIFTS.values():
    _register(_spec)
