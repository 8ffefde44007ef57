"""A dataset gives class names, prompt templates and train / val / test items. No caching, no sampling."""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UserError
from ..images import open_rgb
from ..registry import Registry

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """The items of one split: integer labels and a loader for the i-th image."""

    labels: np.ndarray  # (N,) int64 class indices
    load_image: Callable[[int], Image.Image]
    paths: list[str] | None = None  # image paths relative to the dataset's images folder, when on disk
    locate: Callable[[int], Path] | None = None  # the i-th image's file, when on disk (the tensor decode reads it)
    missing_hint: str = ""  # what to do about a missing file, for the error message
    # per item, what seeds an augmented view's randomness, (position in the source split, pass); None: the
    # item's own position (a split of a dataset, a test subset)
    item_keys: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


class Dataset(ABC):
    name: str
    classnames: list[str]
    templates: list[str]  # each with one "{}" for the class name
    _digest: str  # a digest of the content (files, split lists)
    bank: dict[str, list[str]] | None = None  # descriptions per class (datasets.prompts), in place of templates
    bank_source: str = ""  # where the bank came from, for messages
    prompt_source: dict | None = None  # what results rows record of the bank: its kind and sha256

    @property
    def identity(self) -> str:
        """Name plus a digest of the content; part of every feature-cache key."""
        return f"{self.name}@{self._digest}"

    @abstractmethod
    def split(self, name: str) -> Split: ...

    @property
    def index_dir(self) -> Path | None:
        """Folder of published few-shot index files (shot_K-seed_S.json), if the dataset has one."""
        return None

    def ensure_images(self) -> None:
        """Make the image files available (download on first use); called before any image is encoded."""
        return None

    def use_bank(self, bank: dict[str, list[str]], source: str) -> None:
        """Read the classes' descriptions from `bank` instead of the templates (checked now, in one line)."""
        from .prompts import bank_prompts

        bank_prompts(bank, self.classnames, source)
        self.bank, self.bank_source = bank, source

    own_templates: bool = False  # the templates are crossgate's English ones: "a {}" becomes "an {}" by the name
    prompt_names: list[str] | None = None  # how the templates name each class, where not by its class name

    def prompts(self) -> tuple[list[str], np.ndarray]:
        """Every class name in every template (or every description of the bank), and the class of each."""
        if self.bank is not None:
            from .prompts import bank_prompts

            return bank_prompts(self.bank, self.classnames, self.bank_source)
        names = self.prompt_names or self.classnames
        texts = [(with_article(t, c) if self.own_templates else t).format(c) for c in names for t in self.templates]
        labels = np.repeat(np.arange(len(self.classnames)), len(self.templates))
        return texts, labels


def with_article(template: str, name: str) -> str:
    """Our English templates' "a {}" as "an {}" before a vowel sound (by spelling: "an ankle boot", "an
    apple"; "a unicorn" stays wrong, which spelling cannot tell)."""
    return template.replace("a {}", "an {}") if name[:1].lower() in "aeiou" else template


class ArrayDataset(Dataset):
    """A dataset whose images are in memory as uint8 arrays (N, H, W) or (N, H, W, 3)."""

    def __init__(self, name, classnames, templates, arrays: dict[str, tuple[np.ndarray, np.ndarray]],
                 content_digest: str):
        self.name = name
        self.classnames = list(classnames)
        self.templates = list(templates)
        self._arrays = arrays
        self._digest = content_digest

    def split(self, name: str) -> Split:
        if name not in self._arrays:
            raise UserError(f"unknown split {name!r}; available: {', '.join(self._arrays)}")
        images, labels = self._arrays[name]
        return Split(labels=labels.astype(np.int64),
                     load_image=lambda i: Image.fromarray(images[i]).convert("RGB"))


def files_split(folder: Path, paths: list[str], labels, missing_hint: str) -> Split:
    """A split of image files given by paths relative to `folder`."""

    def load(i: int) -> Image.Image:
        return open_rgb(folder / paths[i], missing_hint)

    return Split(labels=np.asarray(labels, dtype=np.int64), load_image=load, paths=paths,
                 locate=lambda i: folder / paths[i], missing_hint=missing_hint)


def inside(relative: str) -> bool:
    """Whether a path a file list gives (a split file's entry) stays inside the folder it is relative to:
    not absolute, no '..' that climbs out, no NUL. Checked as text, so a link the user made inside the
    dataset still works."""
    import os

    if not relative or "\0" in relative or os.path.isabs(relative) or relative.startswith("~"):
        return False
    normal = os.path.normpath(relative)
    return normal != ".." and not normal.startswith("../") and normal != "."


def digest_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]


def check_template(text: str) -> str:
    """A prompt template with exactly one plain `{}` for the class name, checked by parsing it as
    str.format does: `{{}}` (a literal brace pair), `{x}`, `{0.__class__}`, `{:>9}` or a lone `}` is refused."""
    import string

    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(text) if name is not None]
    except ValueError as err:
        raise UserError(f"template {text!r} is not a valid format string ({err}); write one {{}} for the class "
                        "name and double any other brace") from None
    if len(fields) != 1 or fields[0] != ("", "", None):
        raise UserError(f"template {text!r} needs exactly one plain {{}} for the class name (no names, indices, "
                        "formats or conversions inside the braces; a literal brace is written {{ or }})")
    return text


DATASETS: Registry[Dataset] = Registry("dataset")
