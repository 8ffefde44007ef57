"""GDA: Gaussian discriminant analysis on top of zero-shot (Wang et al., ICLR 2024, "A Hard-to-Beat Baseline
for Training-free CLIP-based Adaptation"; official code mrflogs/ICLR24, main_few_shots.py).

Class means μ_c of the unit-norm few-shot features, one shared covariance Σ of the class-centred features
with their shrinkage estimate of the precision, P = D · pinv((N-1)Σ + tr(Σ) I), and uniform priors:

    W = μ P,   b_c = log(1/C) - ½ μ_c P μ_cᵀ,   logits = 100 · x Tᵀ + α (x Wᵀ + b)

with T the zero-shot class texts and α chosen on the few-shot validation split from the authors' grid.
The authors estimate μ and Σ from 10 augmented passes of the training images, concatenated as samples
(main_few_shots.py: torch.cat over augment_epoch; the centre crop is not among them): with --aug-views N,
fit(views=...) does the same with N cached passes; without, the cached views (centre, and flip with --flip).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import param
from .base import METHODS, FewShotClassifier, concatenated, tensor, unit_rows

LOGIT_SCALE = 100.0


@dataclass
class GDAConfig:
    alphas: tuple[float, ...] = param((1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0),
                                      "weights of the GDA logits beside zero-shot, chosen on validation "
                                      "(the authors' grid)")


def gda_head(x: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(W (C, D), b (C,)) of GDA with the authors' shrinkage precision, in float64."""
    x = tensor(x).double()
    y = tensor(y)
    onehot = torch.nn.functional.one_hot(y, n_classes).double()
    mus = (onehot.T @ x) / onehot.sum(0).clamp_min(1)[:, None]
    centred = x - mus[y]
    n, d = centred.shape
    cov = centred.T @ centred / max(n - 1, 1)  # torch.cov of the centred features (their mean is 0)
    shrunk = (n - 1) * cov + torch.trace(cov) * torch.eye(d, dtype=torch.float64)
    if torch.trace(cov) > 0:  # positive definite: W = d · mus · shrunk⁻¹, by Cholesky (the pinv, 10x faster)
        w = d * torch.cholesky_solve(mus.T, torch.linalg.cholesky(shrunk)).T
    else:  # one image per class: no covariance, pinv(0) = 0, GDA adds nothing to zero-shot
        w = torch.zeros_like(mus)
    b = np.log(1.0 / n_classes) - 0.5 * (w * mus).sum(1)
    return w.cpu().numpy(), b.cpu().numpy()


@METHODS.register("gda", help="Zero-shot + α·Gaussian discriminant analysis with a shrunk shared covariance; "
                              "α on validation (Wang et al., ICLR 2024)")
class GDA(FewShotClassifier):
    uses_text = True
    zero_shot_attr = "text_"  # consulted at prediction time (with_text)
    config_class = GDAConfig  # closed form: random_state is unused
    aug_views = "the passes, concatenated, are the samples of its means and covariance (main_few_shots.py)"

    def fit(self, x, y, *, text=None, val=None, views=None):
        x, y, val = self._check_fit(x, y, text, val)
        cfg = self._config()
        self.text_ = text.class_means()
        xs, ys = concatenated(self._check_views(views, x.shape[1]), x, y)
        self.coef_, self.intercept_ = (a.astype(np.float32) for a in gda_head(unit_rows(xs), ys, self.n_classes_))
        xv, yv = self._val_or_train(x, y, val)
        zero_shot, gda = self._parts(xv)
        accs = [float(np.mean((zero_shot + a * gda).argmax(1) == yv)) for a in cfg.alphas]
        self.alpha_ = float(cfg.alphas[int(np.argmax(accs))])  # ties: the first in grid order
        self.chosen_ = {"alpha": self.alpha_}
        return self

    def _parts(self, x):
        x = unit_rows(x)
        return LOGIT_SCALE * x @ self.text_.T, x @ self.coef_.T + self.intercept_


    def _logits(self, x):
        zero_shot, gda = self._parts(x)
        return zero_shot + self.alpha_ * gda
