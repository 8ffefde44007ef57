"""Feature containers: the bottom layer. Encoders produce these, the cache stores them, methods read them.

Imports nothing from crossgate, so the estimators (which import only this, fusion and train) stay
importable without the cache, extraction, datasets or encoders.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; an all-zero row stays zero instead of dividing by zero."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class ImageFeatures:
    x: np.ndarray  # (N, D_img) float32
    labels: np.ndarray  # (N,) int64
    kept: np.ndarray | None = None  # positions in the split of these rows when unreadable images were skipped

    def rows(self, positions: np.ndarray, what: str, paths: list[str] | None = None) -> np.ndarray:
        """Rows of the given split positions; a position whose image was skipped is a ValueError."""
        from .errors import UserError

        if self.kept is None:
            return np.asarray(positions)
        rows = np.searchsorted(self.kept, positions)
        missing = [int(p) for p, r in zip(positions, rows, strict=True)
                   if r >= len(self.kept) or self.kept[r] != p]
        if missing:
            names = [paths[p] if paths else f"#{p}" for p in missing]
            raise UserError(f"{len(missing)} {what} image(s) were skipped as unreadable: {', '.join(names)}; "
                            "fix those files (the published split needs them)")
        return rows


@dataclass(frozen=True)
class TextFeatures:
    """Every class name in every template, encoded."""

    x: np.ndarray  # (M, D_text) float32, in image space when the backbone aligns them
    native: np.ndarray  # (M, D_native) the text tower's own output (unaligned for `lite`)
    labels: np.ndarray  # (M,) class of each prompt
    texts: list[str]

    @property
    def n_classes(self) -> int:
        return int(self.labels.max()) + 1

    def of_classes(self, classes) -> TextFeatures:
        """The prompts of `classes` (class indices), relabelled 0, 1, ... in that order."""
        classes = np.asarray(classes)
        keep = np.flatnonzero(np.isin(self.labels, classes))
        relabel = {int(c): i for i, c in enumerate(classes)}
        return TextFeatures(x=self.x[keep], native=self.native[keep],
                            labels=np.array([relabel[int(c)] for c in self.labels[keep]], dtype=np.int64),
                            texts=[self.texts[i] for i in keep])

    def class_means(self) -> np.ndarray:
        """(C, D): per class the mean of its unit-norm template features, renormalised (CLIP's recipe)."""
        x = unit_rows(self.x)
        return unit_rows(np.stack([x[self.labels == c].mean(0) for c in range(self.n_classes)]))

    def raw_class_means(self) -> np.ndarray:
        """(C, D): per class the mean of its raw template features, then normalised (Lin et al.'s head init)."""
        return unit_rows(np.stack([self.x[self.labels == c].mean(0) for c in range(self.n_classes)]))
