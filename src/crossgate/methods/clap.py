"""CLAP: CLass-Adaptive linear Probing (Silva-Rodriguez et al., CVPR 2024, "A Closer Look at the Few-Shot
Adaptation of Large Vision-Language Models"; official code jusiro/CLAP, trainers/adapters.py).

A zero-shot-initialised linear probe, logits = 100 · cos(x, w_c), trained with cross-entropy plus a
class-adaptive penalty that keeps each class prototype near its zero-shot text feature t_c:

    L = CE + mean_c λ_c ||w_c - t_c||²,   λ_c = mean softmax probability of class c under zero-shot on the
                                              support images of class c

t_c is crossgate's zero-shot classifier (the one every method starts from) at the scale of the raw
template features, whose mean the authors' code uses: the penalty and the learning rate are sized for that
scale, and with the adaptation off (0 epochs) the probe is exactly `zeroshot`. Optimisation as their config
(SGD, momentum 0.9, lr 0.1, batch 256, 300 epochs, one constant warm-up epoch at 1e-5, cosine). CLAP is
designed to need no validation set: it has no hyperparameter search and keeps the last state.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from ..config import param
from ..train import train_dassl
from .base import METHODS, FewShotClassifier, tensor, unit_rows

LOGIT_SCALE = 100.0


@dataclass
class CLAPConfig:
    epochs: int = param(300, "epochs (the authors' config)")
    lr: float = param(0.1, "SGD learning rate (momentum 0.9)", positive=True)
    batch_size: int = param(256, "samples per batch", positive=True)
    constraint: bool = param(True, "the class-adaptive penalty (false: the zero-shot-initialised probe ZS-LP)")


def base_text(text) -> np.ndarray:
    """(C, D) the zero-shot class weights at the mean norm of the raw per-class template means (CLAP's and
    TaskRes's base text features are those raw means: same scale, the shared zero-shot directions)."""
    raw = np.stack([text.x[text.labels == c].mean(0) for c in range(text.n_classes)])
    return (text.class_means() * float(np.linalg.norm(raw, axis=1).mean())).astype(np.float32)


def cosine_logits(x: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    return LOGIT_SCALE * F.normalize(x, dim=1) @ F.normalize(prototypes, dim=1).T


def clap_multipliers(zero_shot_logits: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """λ_c: the mean zero-shot softmax probability of class c over the support images of class c."""
    onehot = F.one_hot(y, n_classes).float()
    return torch.diag(zero_shot_logits.softmax(-1).T @ onehot) / onehot.sum(0).clamp_min(1)


@METHODS.register("clap", help="Zero-shot-initialised linear probe with class-adaptive penalties keeping each "
                               "class near its zero-shot weights (Silva-Rodriguez et al., CVPR 2024)")
class CLAP(FewShotClassifier):
    uses_text = True
    config_class = CLAPConfig  # random_state seeds the batch order

    def fit(self, x, y, *, text=None, val=None):
        x, y, val = self._check_fit(x, y, text, val)
        cfg = self._config()
        xt, yt = tensor(unit_rows(x)), tensor(y)
        base = tensor(base_text(text))
        prototypes = torch.nn.Parameter(base.clone())
        with torch.no_grad():
            multipliers = clap_multipliers(cosine_logits(xt, base), yt, self.n_classes_)
        if not cfg.constraint:
            multipliers = torch.zeros_like(multipliers)
        opt = torch.optim.SGD([prototypes], lr=cfg.lr, momentum=0.9)

        def loss_fn(idx):
            penalty = (multipliers * (prototypes - base).pow(2).sum(-1)).mean()
            return F.cross_entropy(cosine_logits(xt[idx], prototypes), yt[idx]) + penalty

        train_dassl(opt, loss_fn, len(yt), cfg.batch_size, cfg.epochs, cfg.lr,
                    torch.Generator().manual_seed(self._seed()))
        self.prototypes_ = prototypes.detach().cpu().numpy()
        self.multipliers_ = multipliers.cpu().numpy()
        self.chosen_ = {}
        return self

    def _logits(self, x):
        with torch.no_grad():
            return cosine_logits(tensor(unit_rows(x)), tensor(self.prototypes_)).cpu().numpy()
