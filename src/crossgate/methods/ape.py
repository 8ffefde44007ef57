"""Training-free APE (Zhu et al., ICCV 2023, "Not All Features Matter: Enhancing Few-shot CLIP with Adaptive
Prior Refinement"; official code yangyangyang127/APE, main.py and utils.py).

1. Prior refinement: score each feature channel d by J_d = -w₀ · S_d + w₁ · V_d, with S_d the mean product
   x_d·x'_d over pairs of samples (class text and few-shot images) of different classes, and V_d the
   variance of the class texts across classes; keep the top channels.
2. Cache model on the refined channels (unit-norm again): affinity R = exp(-β(1 - f' F'ᵀ)) to the few-shot
   keys F', whose one-hot values are reweighted by exp(γ · KL(onehot ‖ softmax(F' W'))) (the key's
   disagreement with the refined zero-shot classifier W', in bits, as in their code).
3. logits = 100 · f Wᵀ + α · R · values, with (β, α, γ) searched on the few-shot validation split over the
   authors' grids (their Oxford Pets config: β, α in 0.1..7, γ in 0..1).

APE's paper used GPT-3-generated (CuPL) prompts; crossgate gives every method the dataset's templates, so
numbers here are not the paper's. The channel count is a share of the feature size (their Pets RN50 config
keeps 800 of 1,024).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import param
from .base import METHODS, FewShotClassifier, tensor, unit_rows

LOGIT_SCALE = 100.0


def _grid(top: float, steps: int, start: float) -> tuple[float, ...]:
    """Their grid: start + i·(top - start)/steps for i < steps."""
    return tuple(float(round(start + i * (top - start) / steps, 6)) for i in range(steps))


@dataclass
class APEConfig:
    channel_share: float = param(800 / 1024, "share of feature channels kept by the refinement", positive=True)
    weights: tuple[float, ...] = param((0.7, 0.3), "w₀ (inter-class similarity) and w₁ (text variance) of the "
                                                   "channel criterion (training-free APE)", length=2)
    betas: tuple[float, ...] = param(_grid(7.0, 200, 0.1), "affinity sharpness grid, searched on validation")
    alphas: tuple[float, ...] = param(_grid(7.0, 20, 0.1), "cache weight grid, searched on validation")
    gammas: tuple[float, ...] = param(_grid(1.0, 20, 0.0), "value reweighting grid, searched on validation")


def channel_criterion(text_w: torch.Tensor, keys: torch.Tensor, labels: torch.Tensor, n_classes: int,
                      weights) -> torch.Tensor:
    """J_d for every channel: -w₀ · mean over cross-class sample pairs of x_d x'_d + w₁ · var over classes of
    the class text. Samples are each class's text and its few-shot keys; the pair mean in closed form."""
    feats = torch.cat([text_w, keys])
    owner = torch.cat([torch.arange(n_classes), labels])
    onehot = torch.nn.functional.one_hot(owner, n_classes).to(feats.dtype)
    per_class = onehot.T @ feats  # (C, D) per-class sums
    counts = onehot.sum(0)
    cross = per_class.sum(0) ** 2 - (per_class ** 2).sum(0)  # Σ over pairs from different classes
    pairs = (counts.sum() ** 2 - (counts ** 2).sum()).clamp_min(1)  # one class: no pairs, no similarity
    spread = text_w.var(dim=0) if n_classes > 1 else torch.zeros(text_w.shape[1], dtype=text_w.dtype)
    return -weights[0] * cross / pairs + weights[1] * spread


def kl_bits(values: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Their cache divergence: Σ v log2((v + 1e-6) / (softmax + 1e-6)) per key, as a column."""
    p = logits.softmax(1)
    return (values * torch.log2((values + 1e-6) / (p + 1e-6))).sum(1, keepdim=True)


@METHODS.register("ape", help="Training-free APE: refined feature channels and a cache model of the few-shot "
                              "images beside zero-shot (Zhu et al., ICCV 2023; the paper's GPT-3 prompts not used)")
class APE(FewShotClassifier):
    uses_text = True
    zero_shot_attr = "text_"  # consulted at prediction time (with_text)
    config_class = APEConfig  # training-free and deterministic: random_state is unused

    def fit(self, x, y, *, text=None, val=None):
        x, y, val = self._check_fit(x, y, text, val)
        cfg = self._config()
        keys = tensor(unit_rows(x))
        text_w = tensor(text.class_means())
        values = torch.nn.functional.one_hot(tensor(y), self.n_classes_).float()
        criterion = channel_criterion(text_w, keys, tensor(y), self.n_classes_, cfg.weights)
        n_keep = max(1, min(x.shape[1], int(round(cfg.channel_share * x.shape[1]))))
        channels = torch.topk(criterion, n_keep).indices
        self.channels_ = channels.cpu().numpy()
        refined_text = torch.nn.functional.normalize(text_w[:, channels], dim=1)
        refined_keys = torch.nn.functional.normalize(keys[:, channels], dim=1)
        divergence = kl_bits(values, refined_keys @ refined_text.T)
        self.text_, self.keys_, self.values_, self.divergence_ = text_w.cpu().numpy(), refined_keys.cpu().numpy(), \
            values.cpu().numpy(), divergence.cpu().numpy()
        xv, yv = self._val_or_train(x, y, val)
        self.beta_, self.alpha_, self.gamma_ = self._search(xv, tensor(yv), cfg)
        self.chosen_ = {"beta": self.beta_, "alpha": self.alpha_, "gamma": self.gamma_, "channels": n_keep}
        return self

    def _affinity(self, x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(zero-shot logits, refined affinity f' F'ᵀ) of raw features x."""
        x = tensor(unit_rows(x))
        refined = torch.nn.functional.normalize(x[:, tensor(self.channels_)], dim=1)
        return LOGIT_SCALE * x @ tensor(self.text_).T, refined @ tensor(self.keys_).T

    def _search(self, xv, yv, cfg) -> tuple[float, float, float]:
        """The (β, α, γ) with the best validation accuracy; ties to the first in (β, α, γ) order."""
        zero_shot, affinity = self._affinity(xv)
        values, div = tensor(self.values_), tensor(self.divergence_)
        gammas, alphas = torch.tensor(cfg.gammas), torch.tensor(cfg.alphas)
        # every γ's reweighted values side by side: (K, nγ·C)
        soft = (values[None] * torch.exp(div[None] * gammas[:, None, None])).permute(1, 0, 2).reshape(len(values), -1)
        best = (-1.0, 0, 0, 0)
        for bi, beta in enumerate(cfg.betas):
            cache = (torch.exp(-beta * (1 - affinity)) @ soft).view(len(yv), len(gammas), -1)  # (N, nγ, C)
            logits = zero_shot[:, None, None] + alphas[None, :, None, None] * cache[:, None]  # (N, nα, nγ, C)
            acc = (logits.argmax(-1) == yv[:, None, None]).float().mean(0)  # (nα, nγ)
            top = float(acc.max())
            if top > best[0]:
                ai, gi = divmod(int(torch.argmax(acc)), len(gammas))  # first maximum in (α, γ) order
                best = (top, bi, ai, gi)
        _, bi, ai, gi = best
        return float(cfg.betas[bi]), float(cfg.alphas[ai]), float(cfg.gammas[gi])


    def _logits(self, x):
        zero_shot, affinity = self._affinity(x)
        soft = tensor(self.values_) * torch.exp(tensor(self.divergence_) * self.gamma_)
        return (zero_shot + self.alpha_ * torch.exp(-self.beta_ * (1 - affinity)) @ soft).cpu().numpy()
