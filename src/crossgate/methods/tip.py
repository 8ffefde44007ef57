"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022) on cached features.

logits = 100 · x Tᵀ + α · exp(-β (1 - x Kᵀ)) V, with T the class text features, K the few-shot image
features (the cache keys) and V their one-hot labels. β (sharpness) and α (residual ratio) are searched on
the few-shot validation split; Tip-Adapter-F also fine-tunes the keys, choosing the epoch on validation
(the authors' code picks it on test). With --aug-views N, as the authors' build_cache_model: each key is the
mean of an image's N augmented passes, normalised; Tip-Adapter-F trains epoch e on pass e mod N (their
training loader augments afresh every epoch).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from ..config import param
from .base import METHODS, FewShotClassifier, tensor, unit_rows

LOGIT_SCALE = 100.0


@dataclass
class TipConfig:
    betas: tuple[float, ...] = param(tuple(float(b) for b in np.round(np.linspace(0.1, 12.0, 60), 4)),
                                     "sharpness grid, searched on validation")
    # log-spaced: how much the cache counts depends on how sharp zero-shot logits are
    alphas: tuple[float, ...] = param(tuple(float(a) for a in np.round(np.logspace(-1, 3, 61), 4)),
                                      "residual-ratio grid, searched on validation")


@dataclass
class TipFConfig(TipConfig):
    epochs: int = param(20, "key fine-tuning epochs", positive=True)
    lr: float = param(1e-3, "key fine-tuning AdamW learning rate", positive=True)


def tip_logits(x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, text: torch.Tensor,
               beta: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """(len(beta), len(alpha), N, C) logits for every (β, α) pair at once."""
    zero_shot = LOGIT_SCALE * x @ text.T  # (N, C)
    affinity = x @ keys.T  # (N, K)
    cache = torch.exp(-beta[:, None, None] * (1 - affinity)[None]) @ values  # (nβ, N, C)
    return zero_shot[None, None] + alpha[None, :, None, None] * cache[:, None]


GRID_FLOATS = 1 << 22  # logits held at once by the grid search (16 MB): whatever the classes and images


def search_beta_alpha(xv, yv, keys, values, text, search: TipConfig) -> tuple[float, float, float]:
    """The (β, α) with the best validation accuracy; ties to the smaller β, then the smaller α. The grid
    is scored in blocks of validation images and one β at a time, so memory stays at GRID_FLOATS logits
    (all of it at once took 18.7 GB for 1,000 classes x 3 images)."""
    betas = torch.tensor(search.betas, dtype=torch.float32)
    alphas = torch.tensor(search.alphas, dtype=torch.float32)
    correct = torch.zeros(len(betas), len(alphas))
    rows = max(1, GRID_FLOATS // (len(alphas) * text.shape[0]))
    with torch.no_grad():
        for start in range(0, len(xv), rows):
            xb, yb = xv[start:start + rows], yv[start:start + rows]
            for i in range(len(betas)):
                logits = tip_logits(xb, keys, values, text, betas[i:i + 1], alphas)[0]  # (nα, rows, C)
                correct[i] += (logits.argmax(-1) == yb).sum(-1).to(correct)
    acc = correct / max(len(xv), 1)
    flat = int(torch.argmax(acc))  # first maximum in (β, α) order
    i, j = divmod(flat, len(alphas))
    return search.betas[i], search.alphas[j], float(acc[i, j])


@METHODS.register("tip", help="Training-free Tip-Adapter: a key-value cache of the few-shot images beside the "
                              "zero-shot classifier (Zhang et al., ECCV 2022)")
class TipAdapter(FewShotClassifier):
    uses_text = True
    fine_tune = False
    config_class = TipConfig  # both methods are deterministic: random_state is unused
    aug_views = ("each cache key is the mean of an image's passes (build_cache_model); Tip-Adapter-F trains "
                 "epoch e on pass e mod N")

    def fit(self, x, y, *, text=None, val=None, views=None):
        x, y, val = self._check_fit(x, y, text, val)
        search = self._config()
        views = self._check_views(views, x.shape[1])
        xt, yt = tensor(unit_rows(x)), tensor(y)
        xv, yv = (tensor(unit_rows(val[0])), tensor(val[1])) if val else (xt, yt)
        epochs_in = [xt]  # what fine-tuning epoch e trains on: epochs_in[e % len]
        if views is not None:
            xt, yt = tensor(unit_rows(views[0].mean(0))), tensor(views[1])
            epochs_in = [tensor(unit_rows(v)) for v in views[0]]
        self.text_ = tensor(text.class_means().astype(np.float32))
        self.values_ = F.one_hot(yt, self.n_classes_).float()
        self.keys_ = xt.clone()
        self.chosen_ = {}
        self.beta_, self.alpha_, _ = search_beta_alpha(xv, yv, self.keys_, self.values_, self.text_, search)
        if self.fine_tune:
            self.keys_, self.chosen_["epoch"] = self._fine_tune_keys(xt, yt, xv, yv, search, epochs_in)
            self.beta_, self.alpha_, _ = search_beta_alpha(xv, yv, self.keys_, self.values_, self.text_, search)
        self.chosen_.update(beta=self.beta_, alpha=self.alpha_)
        return self

    def with_text(self, text):
        other = copy.copy(self)
        other.text_ = tensor(text.class_means().astype(np.float32))
        return other

    def _fine_tune_keys(self, xt, yt, xv, yv, cfg: TipFConfig, epochs_in: list) -> tuple[torch.Tensor, int]:
        """Keys trained with cross-entropy on the few-shot images (full batch, AdamW, cosine schedule) at the
        training-free search's (β, α) (Zhang et al. start from fixed per-dataset values); epoch e's inputs are
        epochs_in[e % len] (the keys' images, or one augmented pass of them). The epoch with the best validation
        accuracy is kept (epoch 0 = the training-free keys), then (β, α) is searched again."""
        keys = torch.nn.Parameter(xt.clone())
        opt = torch.optim.AdamW([keys], lr=cfg.lr, eps=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs)
        beta, alpha = torch.tensor([self.beta_]), torch.tensor([self.alpha_])

        def val_acc():
            with torch.no_grad():
                logits = tip_logits(xv, keys, self.values_, self.text_, beta, alpha)[0, 0]
            return float((logits.argmax(-1) == yv).float().mean())

        best = (val_acc(), 0, keys.detach().clone())
        for epoch in range(1, cfg.epochs + 1):
            opt.zero_grad()
            inputs = epochs_in[(epoch - 1) % len(epochs_in)]
            loss = F.cross_entropy(tip_logits(inputs, keys, self.values_, self.text_, beta, alpha)[0, 0], yt)
            loss.backward()
            opt.step()
            sched.step()
            acc = val_acc()
            if acc > best[0]:
                best = (acc, epoch, keys.detach().clone())
        return best[2], best[1]

    def _logits(self, x):
        with torch.no_grad():
            xt = tensor(unit_rows(x))
            return tip_logits(xt, self.keys_, self.values_, self.text_, torch.tensor([self.beta_]),
                              torch.tensor([self.alpha_]))[0, 0].cpu().numpy()


@METHODS.register("tipf", help="Tip-Adapter-F: the cache keys fine-tuned (lr 1e-3, 20 epochs), the epoch chosen "
                               "on validation (Zhang et al., ECCV 2022)")
class TipAdapterF(TipAdapter):
    config_class = TipFConfig

    fine_tune = True
