"""`imagefolder:PATH`: your own images, one sub-folder per class.

    PATH/<class>/*.jpg                     stratified split, fixed seed: 60% train, 20% val, 20% test
    PATH/{train,val,test}/<class>/*.jpg    the given split

Folder names become class names ('_' -> ' '); a `classnames.txt` in PATH with lines `<folder> <name>`
overrides them. Prompts: TEMPLATES below unless templates are given (`--template`).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import Dataset, Split, check_template, files_split

log = logging.getLogger("crossgate")
PREFIX = "imagefolder:"
EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
RATIOS = (0.6, 0.2, 0.2)  # train, val, test when PATH has no train/ val/ test/ folders
SPLIT_SEED = 0
# CLIP-style photo prompts; --template replaces them
TEMPLATES = ["a photo of a {}.", "a bad photo of a {}.", "a cropped photo of a {}.", "a close-up photo of a {}.",
             "a bright photo of a {}.", "a photo of the large {}.", "a photo of the small {}."]


def hidden(name: str) -> bool:
    """Names a file manager or tool leaves behind (.thumbnails, .ipynb_checkpoints, __MACOSX, ._x.jpg)."""
    return name.startswith((".", "__"))


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file()
                  and not any(hidden(part) for part in p.relative_to(folder).parts))


def canonical_name(name: str) -> str:
    """imagefolder:PATH with PATH absolute and resolved: `DIR`, `DIR/`, `./DIR` and a link to it are one
    dataset (one set of results rows, one table)."""
    return f"{PREFIX}{Path(name[len(PREFIX):]).expanduser().resolve()}"


def content_digest(root: Path, items: dict[str, list[tuple[str, int]]]) -> str:
    """What keys the folder's cached features: per image its split, path, class, size, modification time,
    status-change time (ctime) and inode. Any write to a file, a rename, a swap of two files or a copy over
    one changes its ctime or inode, which no tool can set back (touch and cp -p restore the modification
    time only), so stale features cannot be read; content hashes would cost a read of every image on every
    run (benchmarks/folder_digest.py measures both)."""
    digest = hashlib.sha256()
    for s in ("train", "val", "test"):
        for rel, label in items[s]:
            st = (root / rel).stat()
            digest.update(f"{s}/{rel}/{label}/{st.st_size}/{st.st_mtime_ns}/{st.st_ctime_ns}/{st.st_dev}/"
                          f"{st.st_ino};".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


class ImageFolderDataset(Dataset):
    def __init__(self, root: Path, templates: list[str] | None = None):
        self.root = Path(root).expanduser()
        self.name = canonical_name(f"{PREFIX}{root}")  # one name for one folder, however it was typed
        if self.root.is_file():
            raise UserError(f"{self.root} is a file; imagefolder:PATH takes a folder with one sub-folder of images "
                            "per class")
        if not self.root.is_dir():
            raise UserError(f"image folder {self.root} does not exist; give imagefolder:PATH with one "
                            "sub-folder of images per class")
        split_dirs = {s: self.root / s for s in ("train", "val", "test")}
        given = [s for s, d in split_dirs.items() if d.is_dir()]
        if given and len(given) < 3:
            missing = [f"{s}/" for s in split_dirs if s not in given]
            raise UserError(f"{self.root} has {' and '.join(f'{s}/' for s in given)} but no {' or '.join(missing)}: "
                            "a pre-split folder needs all of train/, val/ and test/ (each with one sub-folder per "
                            "class); or put the class folders directly in it")
        presplit = len(given) == 3
        base = split_dirs["train"] if presplit else self.root
        folders = sorted(d.name for d in base.iterdir() if d.is_dir() and not hidden(d.name))
        if len(folders) < 2:
            raise UserError(f"{base} has {len(folders)} class folders; put the images of each class in a "
                            "sub-folder of its own (at least two classes)")
        if presplit:
            for s in ("val", "test"):
                extra = sorted(d.name for d in split_dirs[s].iterdir() if d.is_dir() and not hidden(d.name)
                               and d.name not in folders)
                if extra:
                    raise UserError(f"class folder {extra[0]!r} is in {split_dirs[s]} but not in {base} ({len(extra)} "
                                    "such); every class needs training images: add them or remove the folder")
        self.classnames = self._classnames(folders)
        self.templates = [check_template(t) for t in (templates or TEMPLATES)]
        self.own_templates = templates is None  # ours choose "a" or "an"; a user's are used as given
        self._items: dict[str, list[tuple[str, int]]] = {"train": [], "val": [], "test": []}
        empty = []
        for label, folder in enumerate(folders):
            if presplit:
                for s, d in split_dirs.items():
                    files = [(str(p.relative_to(self.root)), label) for p in image_files(d / folder)]
                    if not files and s != "test":  # a class without training or validation images cannot be fit
                        empty.append(f"{s}/{folder}")
                    self._items[s] += files
                continue
            files = [str(p.relative_to(self.root)) for p in image_files(self.root / folder)]
            if not files:
                empty.append(folder)
            order = np.random.default_rng([SPLIT_SEED, label]).permutation(len(files))
            n_val = max(1, round(RATIOS[1] * len(files))) if len(files) >= 3 else 0
            n_test = max(1, round(RATIOS[2] * len(files))) if len(files) >= 3 else 0
            cut = len(files) - n_val - n_test
            for s, chosen in (("train", order[:cut]), ("val", order[cut:cut + n_val]), ("test", order[cut + n_val:])):
                self._items[s] += [(files[i], label) for i in sorted(chosen)]
        if empty:
            raise UserError(f"class folders with no images in {self.root}: {', '.join(empty)}; add images "
                            f"({', '.join(sorted(EXTENSIONS))}) or remove them")
        for split in ("train", "val", "test"):
            if not self._items[split]:
                raise UserError(f"{self.root} gives no {split} images: a class needs at least 3 images to have "
                                "one in each of train, val and test (or give train/, val/ and test/ folders)")
        for folder in folders:  # the same images under two class names would be two classes of one thing
            target = base / folder
            if target.is_symlink() and target.resolve().parent == base.resolve():
                log.warning("class folder %s is a link to %s in the same folder: its images count for both "
                            "classes", folder, target.resolve().name)
        self._digest = content_digest(self.root, self._items)

    def _classnames(self, folders: list[str]) -> list[str]:
        names = {f: f.replace("_", " ") for f in folders}
        override = self.root / "classnames.txt"
        if override.is_file():
            try:
                text = override.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is fine
            except UnicodeDecodeError:
                raise UserError(f"{override} is not UTF-8 text; save it as UTF-8") from None
            for number, line in enumerate(text.splitlines(), 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                parts = line.strip().split(None, 1)  # a space or a tab between folder and name
                if len(parts) != 2 or parts[0] not in names:
                    shown = ", ".join(folders[:5]) + (", ..." if len(folders) > 5 else "")
                    raise UserError(f"{override} line {number} ({line.strip()!r}) is not '<folder> <name>' with one "
                                    f"of the class folders ({shown})")
                names[parts[0]] = parts[1].strip()
        result = [names[f] for f in folders]
        empty = [f for f in folders if not names[f].strip()]
        if empty:
            raise UserError(f"class folder {empty[0]!r} in {self.root} gives an empty class name; rename it or "
                            "name it in classnames.txt (lines '<folder> <name>')")
        duplicates = sorted({n for n in result if result.count(n) > 1})
        if duplicates:
            raise UserError(f"duplicate class names {', '.join(duplicates)} in {self.root}; rename the folders "
                            "or fix classnames.txt")
        return result

    def split(self, name: str) -> Split:
        if name not in self._items:
            raise UserError(f"unknown split {name!r}; available: train, val, test")
        items = self._items[name]
        return files_split(self.root, [rel for rel, _ in items], [label for _, label in items],
                           f"it was listed when {self.root} was scanned; run again")
