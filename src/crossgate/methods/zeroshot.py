"""Zero-shot: classify by cosine similarity to each class's mean template text feature."""
from __future__ import annotations

import copy

import numpy as np

from .base import METHODS, FewShotClassifier, unit_rows


@METHODS.register("zeroshot")
class ZeroShot(FewShotClassifier):
    """Text-only classifier: mean of unit-norm template features per class (uses no image labels)."""

    uses_text = True

    def __init__(self, logit_scale: float = 100.0, random_state: int | None = None):
        self.logit_scale = logit_scale  # CLIP's temperature; only sharpens probabilities
        self.random_state = random_state  # unused: zero-shot is deterministic

    def fit(self, x, y, *, text=None, val=None):
        self._check_fit(x, y, text, val)
        self.class_weights_ = text.class_means().astype(np.float32)
        self.chosen_ = {}
        return self

    def with_text(self, text):
        other = copy.copy(self)
        other.class_weights_ = text.class_means().astype(np.float32)
        return other

    def _logits(self, x):
        return self.logit_scale * unit_rows(x) @ self.class_weights_.T
