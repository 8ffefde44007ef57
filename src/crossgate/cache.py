"""Feature cache: encoder outputs computed once per (backbone identity, dataset, split, view).

Entries are safetensors + JSON manifests (see storage.py), written atomically; a hit does no encoder work.
"""
from __future__ import annotations

import hashlib
import json
import logging
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .corruptions import Corruption, corrupt_prompts
from .datasets.base import SPLITS, Dataset
from .encoders.base import Encoder
from .errors import UserError
from .extraction import ON_BAD_IMAGE, Chunks, UnreadableImages, chunk_summary, encode_chunks, entry_lock, merge_chunks
from .features import ImageFeatures, TextFeatures, unit_rows  # noqa: F401  (re-exported)
from .images import PIXELS_VERSION
from .storage import ensure_writable_dir, load_arrays, save_arrays

log = logging.getLogger("crossgate")


@dataclass(frozen=True)
class DatasetFeatures:
    train: ImageFeatures
    val: ImageFeatures
    test: ImageFeatures
    text: TextFeatures
    classnames: list[str]
    train_flip: ImageFeatures | None = None  # the train split's mirrored view, when asked for
    index_dir: Path | None = None  # published few-shot index files, if the dataset has them
    train_paths: list[str] | None = None  # image paths of the train split, to check index files against
    val_paths: list[str] | None = None
    corrupted: dict = field(default_factory=dict)  # Corruption -> corrupted test ImageFeatures or TextFeatures
    corrupted_rows: np.ndarray | None = None  # test rows the corrupted images are copies of (None: all)
    shifted: dict = field(default_factory=dict)  # shift set name -> (its test ImageFeatures, the classes it holds)
    # (shots, seed) -> (passes, n, dim): augmented views of that draw's n training images (--aug-views)
    augmented: dict = field(default_factory=dict)

    def few_shot(self, shots: int, seed: int):
        """The published split when its index file exists, else crossgate's sampler; indices are rows of
        train / val (they differ from split positions only when unreadable images were skipped)."""
        from dataclasses import replace

        from .datasets.fewshot import choose_few_shot

        split = choose_few_shot(self.train.labels, self.val.labels, shots, seed, self.classnames, self.index_dir,
                                self.train_paths, self.val_paths,
                                # the labels of every split position, which the rows are only when none was skipped
                                labels_are_positions=self.train.kept is None and self.val.kept is None)
        if not split.source.startswith("published:"):  # sampled from the rows themselves
            return split
        return replace(split, train=self.train.rows(split.train, "published few-shot training", self.train_paths),
                       val=self.val.rows(split.val, "published few-shot validation", self.val_paths))

    def split(self, name: str) -> ImageFeatures:
        return getattr(self, name)

    def train_views(self) -> list[str]:
        return ["center", "flip"] if self.train_flip is not None else ["center"]

    def few_shot_train(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels of the chosen training images, in every cached view (flipped copies after)."""
        views = [self.train] + ([self.train_flip] if self.train_flip is not None else [])
        return (np.concatenate([v.x[indices] for v in views]), np.concatenate([v.labels[indices] for v in views]))


def _versions() -> dict:
    return {"crossgate": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


class FeatureCache:
    def __init__(self, root: Path | None = None, batch_size: int = 64, workers: int = 0, progress: bool = True,
                 on_bad_image: str = "fail", chunk_images: int = 2048):
        from .settings import default_cache_dir

        self.root = Path(root if root is not None else default_cache_dir()).expanduser()  # None: as the CLI
        self.chunk_images = chunk_images  # images per resumable chunk: the most work a crash can lose
        self._merged: set[Path] = set()  # entries this object just wrote (their skips were reported then)
        self.batch_size, self.workers, self.progress = batch_size, workers, progress
        self.on_bad_image = on_bad_image  # "fail": list unreadable images and stop; "skip": leave them out

    def _stem(self, kind: str, fields: dict) -> Path:
        key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]
        return self.root / "features" / kind / key

    @staticmethod
    def _image_key(encoder: Encoder, dataset: Dataset, split: str, view: str) -> dict:
        return {"encoder": encoder.identity, "dataset": dataset.identity, "split": split, "view": view,
                "pixels": PIXELS_VERSION}

    def _image_stem(self, encoder: Encoder, dataset: Dataset, split: str, view: str) -> Path:
        return self._stem("image", self._image_key(encoder, dataset, split, view))

    def _check_skipped(self, manifest: dict, dataset: Dataset, split: str) -> None:
        skipped = manifest.get("skipped")
        if skipped and self.on_bad_image == "fail":
            raise UserError(f"{len(skipped)} image(s) of {dataset.name} {split} were skipped as unreadable by "
                            f"an earlier run: {', '.join(skipped)}; fix them and clear the cache, or pass "
                            "--on-bad-image skip")

    def ensure_image_features(self, encoder: Encoder, dataset: Dataset, split: str, view: str = "center",
                              rank: int = 0, world: int = 1, barrier=None) -> Path:
        """Compute the entry unless it exists (resuming from finished chunks); returns its stem. With
        world > 1, this process encodes every world-th chunk and rank 0 merges after `barrier()`."""
        if self.on_bad_image not in ON_BAD_IMAGE:
            raise UserError(f"--on-bad-image must be one of {', '.join(ON_BAD_IMAGE)}, got {self.on_bad_image!r}")
        stem = self._image_stem(encoder, dataset, split, view)
        hit = load_arrays(stem)
        if hit is not None:
            self._check_skipped(hit[1], dataset, split)
            return stem
        ensure_writable_dir(self.root, "cache directory", "--cache-dir or CROSSGATE_CACHE")
        items = dataset.split(split)
        chunks = Chunks.of(stem, len(items), self.batch_size, self.chunk_images)
        desc = f"{dataset.name} {split}" + view_label(view)
        meta = {"kind": "image", "key": self._image_key(encoder, dataset, split, view), "versions": _versions()}
        if world > 1:  # ranks share the chunks; no lock (rank 0 alone downloads and writes the entry)
            if rank == 0:
                dataset.ensure_images()
            barrier()
            encode_chunks(encoder, items, chunks, chunks.starts()[rank::world], self.batch_size, self.workers,
                          self.progress and rank == 0, f"{desc} [rank {rank}/{world}]", view)
            barrier()
            bad, _ = chunk_summary(chunks)
            if bad and self.on_bad_image == "fail":  # every rank stops, so none waits at a barrier for rank 0
                raise UnreadableImages([name for _, name, _ in bad], bad[0][2])
            if rank == 0:
                merge_chunks(chunks, items.labels, encoder.image_dim, meta, self.on_bad_image, desc)
            barrier()
            return stem
        with entry_lock(stem, self.root / "locks"):
            if load_arrays(stem) is None:  # another process may have finished it while we waited
                dataset.ensure_images()
                encode_chunks(encoder, items, chunks, chunks.starts(), self.batch_size, self.workers,
                              self.progress, desc, view)
                merge_chunks(chunks, items.labels, encoder.image_dim, meta, self.on_bad_image, desc)
                self._merged.add(stem)
        return stem

    def image_features(self, encoder: Encoder, dataset: Dataset, split: str, view: str = "center") -> ImageFeatures:
        stem = self._image_stem(encoder, dataset, split, view)
        hit = load_arrays(stem)  # a hit is read once; a miss is computed, then read
        if hit is None:
            self.ensure_image_features(encoder, dataset, split, view)
            hit = load_arrays(stem)
            if hit is None:
                raise UserError(f"cache entry {stem} changed while it was read; run again")
        arrays, manifest = hit
        self._check_skipped(manifest, dataset, split)
        skipped = manifest.get("skipped")
        if skipped and stem not in self._merged:
            log.warning("%d unreadable image(s) of %s %s are left out (--on-bad-image skip): %s", len(skipped),
                        dataset.name, split, ", ".join(skipped))
        return ImageFeatures(x=arrays["x"], labels=arrays["labels"], kept=arrays.get("kept"))

    def text_features(self, encoder: Encoder, dataset: Dataset, corruption: Corruption | None = None,
                      seed: int = 0) -> TextFeatures:
        """The prompt pool, encoded; with a text corruption, the corrupted pool (deterministic per seed)."""
        texts, labels = dataset.prompts()
        if corruption is not None:
            texts, labels = corrupt_prompts(texts, labels, dataset.templates, corruption, seed)
        fields = {"encoder": encoder.identity, "texts": texts}
        stem = self._stem("text", fields)
        hit = load_arrays(stem)
        if hit is None:
            ensure_writable_dir(self.root, "cache directory", "--cache-dir or CROSSGATE_CACHE")
            aligned, native = encoder.encode_texts_both(texts)
            save_arrays(stem, {"x": aligned, "native": native}, {"kind": "text", "key": fields,
                                                                 "versions": _versions()})
        else:
            aligned, native = hit[0]["x"], hit[0]["native"]
        return TextFeatures(x=aligned, native=native, labels=labels, texts=texts)

    def corrupted_features(self, encoder: Encoder, dataset: Dataset, corruptions, seed: int = 0,
                           per_class: int | None = None,
                           kept: np.ndarray | None = None) -> tuple[dict, np.ndarray | None]:
        """(Corruption -> the corrupted test images' features, or the corrupted prompts' features; the test
        positions corrupted). With `per_class`, only the first that many test images of each class are
        corrupted (a class-balanced subset: the demo's robustness tables in a fraction of the time), chosen
        among `kept` (the test positions whose images were read) when some were skipped as unreadable."""
        positions, images = None, dataset
        if per_class is not None:
            images, positions = TestSubset.first_per_class(dataset, per_class, kept)
        return ({c: self.image_features(encoder, images, "test", view=c.view(seed)) if c.kind == "image"
                 else self.text_features(encoder, dataset, c, seed) for c in corruptions}, positions)

    def augmented_features(self, encoder: Encoder, dataset: Dataset, positions: np.ndarray, passes: int,
                           seed: int = 0) -> np.ndarray:
        """(passes, len(positions), dim): `passes` augmented views (augment.py) of the training images at
        `positions`, one cache entry per set of images; the views of an image do not depend on the others."""
        from . import augment

        subset = AugmentedTrain(dataset, positions, passes)
        feats = self.image_features(encoder, subset, "train", view=augment.view(seed))
        if len(feats.labels) != passes * len(positions):  # the images were read before: only a changed file
            raise UserError(f"some training images of {dataset.name} could not be read again for their augmented "
                            "views; fix them and run again")
        return feats.x.reshape(passes, len(positions), -1)

    def images_to_encode(self, encoder: Encoder, dataset: Dataset, flip: bool = False, corruptions=(),
                         seed: int = 0, per_class: int | None = None, shifted=()) -> tuple[int, int]:
        """(images whose features are not cached yet, images in all) of what features() and
        corrupted_features() with these arguments read, and the test splits of the `shifted` datasets
        (shift sets): what a run will encode before it fits."""
        subset = TestSubset.first_per_class(dataset, per_class)[0] if per_class is not None else dataset
        entries = [(dataset, split, "center") for split in SPLITS] + ([(dataset, "train", "flip")] if flip else [])
        entries += [(subset, "test", c.view(seed)) for c in corruptions if c.kind == "image"]
        entries += [(ds, "test", "center") for ds in shifted]
        todo = total = 0
        for ds, split, view in entries:
            n = len(ds.split(split))
            total += n
            stem = self._image_stem(encoder, ds, split, view)
            if not stem.with_name(stem.name + ".json").is_file():  # its manifest is written last
                todo += n
        return todo, total

    @staticmethod
    def _every_split(fn, flip: bool) -> dict:
        """fn(split, view) for every split (and the flipped training view), all run before failing, so that
        an error lists every unreadable file of the dataset."""
        out, names, first = {}, [], ""
        for split, view in [(s, "center") for s in SPLITS] + ([("train", "flip")] if flip else []):
            try:
                out[(split, view)] = fn(split, view)
            except UnreadableImages as err:
                names, first = names + err.names, first or err.first_error
        if names:
            raise UnreadableImages(names, first)
        return out

    def ensure_features(self, encoder: Encoder, dataset: Dataset, flip: bool = False, rank: int = 0,
                        world: int = 1, barrier=None) -> None:
        """Compute every entry of the dataset that is missing, without reading the features back."""
        self._every_split(lambda split, view: self.ensure_image_features(encoder, dataset, split, view, rank,
                                                                         world, barrier), flip)

    def features(self, encoder: Encoder, dataset: Dataset, flip: bool = False) -> DatasetFeatures:
        """Every split's center view, the class texts, and with flip=True the mirrored training images."""
        views = self._every_split(lambda split, view: self.image_features(encoder, dataset, split, view), flip)
        splits = {s: views[(s, "center")] for s in SPLITS}
        return DatasetFeatures(**splits, train_flip=views.get(("train", "flip")),
                               text=self.text_features(encoder, dataset),
                               classnames=list(dataset.classnames), index_dir=dataset.index_dir,
                               train_paths=dataset.split("train").paths, val_paths=dataset.split("val").paths)


def view_label(view: str) -> str:
    """How a progress bar names a view: '' (center), ' (flipped)', ' (gaussian_noise, severity 3)'."""
    if view == "flip":
        return " (flipped)"
    if view.startswith("corrupt:"):
        _, name, severity, _ = view.split(":")
        return f" ({name}, severity {severity})"
    if view.startswith("aug:"):
        return " (augmented views)"
    return ""


class SplitSubset(Dataset):
    """Some images of one split of a dataset as a dataset of their own (its own identity, so its own cache
    entries); an image may appear several times, `item_keys` telling its copies apart."""

    def __init__(self, dataset: Dataset, split_name: str, positions: np.ndarray, tag: str,
                 item_keys: np.ndarray | None = None):
        from dataclasses import replace

        self.name, self.classnames, self.templates = dataset.name, dataset.classnames, dataset.templates
        self._base, self._positions, self._tag, self._split_name = dataset, np.asarray(positions), tag, split_name
        whole = dataset.split(split_name)
        self._split = replace(whole, labels=whole.labels[self._positions],
                              load_image=lambda i: whole.load_image(int(self._positions[i])),
                              paths=[whole.paths[i] for i in self._positions] if whole.paths else None,
                              locate=(lambda i: whole.locate(int(self._positions[i]))) if whole.locate else None,
                              item_keys=item_keys)

    @property
    def identity(self) -> str:
        return f"{self._base.identity}[{self._tag}]"

    def split(self, name: str):
        if name != self._split_name:
            raise UserError(f"a {self._split_name} subset has only the {self._split_name} split, not {name!r}")
        return self._split

    def ensure_images(self) -> None:
        self._base.ensure_images()


class AugmentedTrain(SplitSubset):
    """Training images, each `passes` times in a row of passes (pass p of image j at p * n + j), keyed by
    (position, pass) so that each copy gets its own augmentation."""

    def __init__(self, dataset: Dataset, positions: np.ndarray, passes: int):
        positions = np.asarray(positions, dtype=np.int64)
        digest = hashlib.sha256(positions.tobytes()).hexdigest()[:16]
        keys = np.stack([np.tile(positions, passes), np.repeat(np.arange(passes), len(positions))], axis=1)
        super().__init__(dataset, "train", np.tile(positions, passes), f"train-{digest}-aug{passes}", keys)


class TestSubset(SplitSubset):
    """Some test images of a dataset as a dataset of their own."""

    def __init__(self, dataset: Dataset, positions: np.ndarray, tag: str):
        super().__init__(dataset, "test", positions, tag)

    @classmethod
    def first_per_class(cls, dataset: Dataset, per_class: int,
                        kept: np.ndarray | None = None) -> tuple[TestSubset, np.ndarray]:
        """The first `per_class` test images of each class, among the `kept` positions when some images
        were skipped as unreadable (a skipped image has no clean score to compare with)."""
        labels = dataset.split("test").labels
        readable = np.ones(len(labels), bool)
        tag = f"test-first-{per_class}-per-class"
        if kept is not None:
            readable[:] = False
            readable[np.asarray(kept, dtype=np.int64)] = True
            tag += "-readable-" + hashlib.sha256(np.asarray(kept, dtype=np.int64).tobytes()).hexdigest()[:8]
        positions = np.sort(np.concatenate([np.flatnonzero((labels == c) & readable)[:per_class]
                                            for c in range(len(dataset.classnames))]))
        return cls(dataset, positions, tag), positions
