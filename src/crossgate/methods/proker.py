"""ProKeR (Bendou et al., CVPR 2025, "ProKeR: A Kernel Perspective on Few-Shot Adaptation of Large
Vision-Language Models"), training-free, after the authors' code (trainers/proker.py).

Kernel ridge regression, in closed form, of the residual between the one-hot labels Y and the zero-shot
cosine logits Z(S) = S Tᵀ of the few-shot features S, with the RBF kernel on the unit sphere
k(a, b) = exp(-β (1 - a·b)):

    A = (K/λ + I)⁻¹ (Y - Z(S)),   logits(x) = x Tᵀ + k(x, S) A

(β, λ) are chosen together on the few-shot validation split from the authors' grid (their Food-101 RN50
ranges); ties go to the earlier (β, λ). With --aug-views N the support set S is the N augmented passes of
the training images, concatenated (as GDA's code, which ProKeR's builds on); without, the cached views.
We solve (K/λ + I)⁻¹ as λ(K + λI)⁻¹ through one eigendecomposition of K per β;
λ = 0 switches the adaptation off (zero-shot).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import param
from .base import METHODS, FewShotClassifier, concatenated, tensor, unit_rows


@dataclass
class ProKeRConfig:
    betas: tuple[float, ...] = param(tuple(float(b) for b in np.round(np.linspace(0.5, 3.0, 20), 6)),
                                     "RBF kernel sharpness grid, searched on validation")
    lambdas: tuple[float, ...] = param(tuple(float(v) for v in np.round(np.linspace(1e-3, 1.0, 10), 6)),
                                       "regularisation grid λ of (K/λ + I)⁻¹, searched on validation")


def rbf(a: torch.Tensor, b: torch.Tensor, beta: float) -> torch.Tensor:
    return torch.exp(-beta * (1 - a @ b.T))


def proker_coefficients(kernel: torch.Tensor, residual: torch.Tensor, lambdas) -> list[torch.Tensor]:
    """(K/λ + I)⁻¹ R = λ (K + λI)⁻¹ R for each λ, from one eigendecomposition of the symmetric K."""
    eigvals, eigvecs = torch.linalg.eigh(kernel)
    projected = eigvecs.T @ residual
    out = []
    for lam in lambdas:
        shrink = torch.zeros_like(eigvals) if lam == 0 else lam / (eigvals.clamp_min(0) + lam)
        out.append(eigvecs @ (shrink[:, None] * projected))
    return out


@METHODS.register("proker", help="Training-free kernel ridge regression of the residual of one-hot labels "
                                 "over zero-shot logits; (β, λ) on validation (Bendou et al., CVPR 2025)")
class ProKeR(FewShotClassifier):
    uses_text = True
    zero_shot_attr = "text_"  # consulted at prediction time (with_text)
    config_class = ProKeRConfig  # closed form: random_state is unused
    aug_views = "the passes, concatenated, are the kernel's support set (as GDA's code)"

    def fit(self, x, y, *, text=None, val=None, views=None):
        x, y, val = self._check_fit(x, y, text, val)
        cfg = self._config()
        xs, ys = concatenated(self._check_views(views, x.shape[1]), x, y)
        support = tensor(unit_rows(xs)).double()
        text_w = tensor(text.class_means()).double()
        residual = torch.nn.functional.one_hot(tensor(ys), self.n_classes_).double() - support @ text_w.T
        xv, yv = self._val_or_train(x, y, val)
        xv = tensor(unit_rows(xv)).double()
        yv = tensor(yv)
        zero_shot_val = xv @ text_w.T
        best = None
        for beta in cfg.betas:
            k_val = rbf(xv, support, beta)
            for lam, coef in zip(cfg.lambdas, proker_coefficients(rbf(support, support, beta), residual,
                                                                   cfg.lambdas), strict=True):
                acc = float(((zero_shot_val + k_val @ coef).argmax(1) == yv).double().mean())
                if best is None or acc > best[0]:
                    best = (acc, beta, lam, coef)
        _, self.beta_, self.lambda_, coef = best
        self.support_ = support.float().cpu().numpy()
        self.coef_ = coef.float().cpu().numpy()
        self.text_ = text_w.float().cpu().numpy()
        self.chosen_ = {"beta": self.beta_, "lambda": self.lambda_}
        return self


    def _logits(self, x):
        x = tensor(unit_rows(x)).double()
        k = rbf(x, tensor(self.support_).double(), self.beta_)
        return (x @ tensor(self.text_).double().T + k @ tensor(self.coef_).double()).cpu().numpy()
