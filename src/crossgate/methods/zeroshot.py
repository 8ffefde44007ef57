"""Zero-shot: classify by cosine similarity to each class's mean template text feature."""
from __future__ import annotations

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


    def _logits(self, x):
        return self.logit_scale_ * unit_rows(x) @ self.class_weights_.T
