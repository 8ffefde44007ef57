"""Zero-shot: classify by cosine similarity to each class's mean template text feature."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ..config import param
from .base import METHODS, FewShotClassifier, unit_rows


@dataclass
class ZeroShotConfig:
    logit_scale: float = param(100.0, "CLIP's temperature; only sharpens probabilities", positive=True)


@METHODS.register("zeroshot", help="Text-only classifier: mean of unit-norm template features per class "
                                   "(Radford et al., ICML 2021); uses no image labels")
class ZeroShot(FewShotClassifier):
    uses_text = True
    zero_shot_attr = "class_weights_"  # consulted at prediction time (with_text)
    config_class = ZeroShotConfig

    def fit(self, x, y, *, text=None, val=None):
        self._check_fit(x, y, text, val)
        self.logit_scale_ = float(self._config().logit_scale)
        self.class_weights_ = text.class_means().astype(np.float32)
        self.chosen_ = {}
        return self

    names_new_classes = True

    def for_new_classes(self, text, x, y, views=None):
        """Zero-shot names any class by its text: the new classes' mean texts are the weights."""
        new = copy.copy(self)
        new.class_weights_ = text.class_means().astype(np.float32)
        new.classes_, new.n_classes_ = np.arange(len(new.class_weights_)), len(new.class_weights_)
        return new

    def _logits(self, x):
        return self.logit_scale_ * unit_rows(x) @ self.class_weights_.T
