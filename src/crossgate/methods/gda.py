"""GDA: Gaussian discriminant analysis on top of zero-shot (Wang et al., ICLR 2024, "A Hard-to-Beat Baseline
for Training-free CLIP-based Adaptation"; official code mrflogs/ICLR24, main_few_shots.py).

Class means μ_c of the unit-norm few-shot features, one shared covariance Σ of the class-centred features
with their shrinkage estimate of the precision, P = D · pinv((N-1)Σ + tr(Σ) I), and uniform priors:

    W = μ P,   b_c = log(1/C) - ½ μ_c P μ_cᵀ,   logits = 100 · x Tᵀ + α (x Wᵀ + b)

with T the zero-shot class texts and α chosen on the few-shot validation split from the authors' grid.
The authors estimate μ and Σ from 10 augmented passes of the training images, concatenated as samples
(main_few_shots.py: torch.cat over augment_epoch; the centre crop is not among them): with --aug-views N,
fit(views=...) does the same with N cached passes; without, the cached views (centre, and flip with --flip).

Base-to-new (main_base2new.py): the new classes, never seen, get means and a precision synthesised from
text. For each new class text t_j: the k = 64 training samples most similar to t_j, and 16 copies of t_j,
averaged, are its mean; its precision is D · pinv(S_j + tr(S_j/(k-1)) I), S_j the scatter of those samples
about t_j; the precision used is the mean over the new classes. α is the base fit's. The authors' base head
there takes pinv of the mean per-class covariance (covariance="class-mean"); the default keeps the few-shot
head's shrunk estimate.
"""
from __future__ import annotations

import copy
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
    covariance: str = param("shrunk", "the precision of the base classes: shrunk (main_few_shots.py) or class-mean "
                            "(pinv of the mean per-class covariance, main_base2new.py's base head)",
                            choices=("shrunk", "class-mean"))


NEW_CLASS_NEIGHBOURS = 64  # training samples nearest a new class's text (main_base2new.py's k)
NEW_CLASS_TEXT_COPIES = 16  # copies of its text averaged with them into its mean


def gda_head(x: np.ndarray, y: np.ndarray, n_classes: int, covariance: str = "shrunk") -> tuple[np.ndarray, np.ndarray]:
    """(W (C, D), b (C,)) of GDA with the authors' shrinkage precision (or, "class-mean", the pinv of the
    mean per-class covariance), in float64."""
    x = tensor(x).double()
    y = tensor(y)
    onehot = torch.nn.functional.one_hot(y, n_classes).double()
    mus = (onehot.T @ x) / onehot.sum(0).clamp_min(1)[:, None]
    if covariance == "class-mean":
        return _linear_head(mus, torch.linalg.pinv(_mean_class_covariance(x, y, mus)), n_classes)
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


def _mean_class_covariance(x: torch.Tensor, y: torch.Tensor, mus: torch.Tensor) -> torch.Tensor:
    """The mean over classes of each class's torch.cov (N_c - 1 in the denominator; a class of one sample
    has none and counts as 0)."""
    covs = []
    for c in range(len(mus)):
        centred = x[y == c] - mus[c]
        covs.append(centred.T @ centred / (len(centred) - 1) if len(centred) > 1 else
                    torch.zeros(x.shape[1], x.shape[1], dtype=x.dtype))
    return torch.stack(covs).mean(0)


def _linear_head(mus: torch.Tensor, precision: torch.Tensor, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    w = mus @ precision  # the precision is symmetric
    b = np.log(1.0 / n_classes) - 0.5 * (w * mus).sum(1)
    return w.cpu().numpy(), b.cpu().numpy()


def new_class_head(samples: np.ndarray, text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) for classes known only by their unit text features `text` (C_new, D), synthesised from the
    unit training `samples` of other classes as main_base2new.py does (module docstring), in float64."""
    vecs, words = tensor(samples).double(), tensor(text).double()
    k = min(NEW_CLASS_NEIGHBOURS, len(vecs))
    d = vecs.shape[1]
    mus, precisions = [], []
    for w in words:
        near = vecs[torch.topk(vecs @ w, k=k).indices]
        mus.append(torch.cat([near, w.expand(NEW_CLASS_TEXT_COPIES, d)]).mean(0))
        scatter = (near - w).T @ (near - w)  # (k - 1) times the covariance about the text
        precisions.append(d * torch.linalg.pinv(scatter + torch.trace(scatter) / max(k - 1, 1)
                                                * torch.eye(d, dtype=torch.float64)))
    return _linear_head(torch.stack(mus), torch.stack(precisions).mean(0), len(words))


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
        self.coef_, self.intercept_ = (a.astype(np.float32) for a in gda_head(unit_rows(xs), ys, self.n_classes_,
                                                                             cfg.covariance))
        xv, yv = self._val_or_train(x, y, val)
        zero_shot, gda = self._parts(xv)
        accs = [float(np.mean((zero_shot + a * gda).argmax(1) == yv)) for a in cfg.alphas]
        self.alpha_ = float(cfg.alphas[int(np.argmax(accs))])  # ties: the first in grid order
        self.chosen_ = {"alpha": self.alpha_}
        return self

    names_new_classes = True

    def for_new_classes(self, text, x, y, views=None):
        """This fit turned to classes it never saw, named by `text`: their means and precision synthesised
        from the training samples it was fitted on (x, y and views, as given to fit) and their texts."""
        views = self._check_views(views, x.shape[1])
        new = copy.copy(self)
        new.text_ = text.class_means()
        coef, intercept = new_class_head(unit_rows(concatenated(views, x, y)[0]), new.text_)
        new.coef_, new.intercept_ = coef.astype(np.float32), intercept.astype(np.float32)
        new.classes_, new.n_classes_ = np.arange(len(new.text_)), len(new.text_)
        return new

    def _parts(self, x):
        x = unit_rows(x)
        return LOGIT_SCALE * x @ self.text_.T, x @ self.coef_.T + self.intercept_


    def _logits(self, x):
        zero_shot, gda = self._parts(x)
        return zero_shot + self.alpha_ * gda
