"""LP++ (Huang et al., CVPR 2024, "LP++: A Surprisingly Strong Linear Probe for Few-Shot CLIP"; official
code FereshteShakeri/FewShot-CLIP-Strong-Baseline, methods/linear_probe_p2.py).

Class weights blend a visual prototype with the class text through a per-class multiplier α_c:

    logits = x Wᵀ + b + α ⊙ (x Tᵀ)

W starts at the per-class sums of the unit-norm few-shot features (their compute_centroids), α at
250 × the mean over classes of each class's own-class zero-shot cosine, mean_c mean_{i: y_i = c} x_i·t_c
(their calculate_init_alpha; `--lpp-alpha-init all-classes` gives the mean of the whole class × class
table instead, what crossgate did before: 1.1-3.8× smaller, since other classes' cosines are lower).
Full-batch block-coordinate descent with the closed-form step sizes of the paper: (W, b) by SGD
(momentum 0.9) with lr_w = 4N / λ_max(XᵀX) every epoch,
α by a gradient step of lr_α = N / (4 max_c Σ_i (x_i·t_c)²) every 10th epoch. The epoch is chosen on the
few-shot validation split (later epochs win ties, as in their code). One difference from their code:
theirs never zeroes α's gradient, so each α step there uses the sum of all gradients so far; we use the
current gradient, which is the update the paper derives its step size for.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from ..config import param
from .base import METHODS, FewShotClassifier, drawn, tensor, unit_rows


@dataclass
class LPPConfig:
    epochs: int = param(300, "full-batch epochs; the best on validation is kept", positive=True)
    alpha_every: int = param(10, "update the blending multipliers α every this many epochs", positive=True)
    alpha_init_scale: float = param(250.0, "α starts at this × the mean zero-shot cosine below")
    alpha_init: str = param("own-class", "which mean: own-class (the authors' code: each class's images with "
                            "their own class text) or all-classes (every image with every class text)",
                            choices=("own-class", "all-classes"))
    select_epoch: bool = param(True, "keep the epoch best on validation (ties: the later); false: the last epoch")


def lpp_step_sizes(x: torch.Tensor, text: torch.Tensor) -> tuple[float, float]:
    """(lr_w, lr_α) of the paper: 4N / λ_max(XᵀX) and N / (4 max_c Σ_i (x_i·t_c)²)."""
    n = len(x)
    top_eig = float(torch.linalg.eigvalsh((x.T @ x).double()).max())
    top_text = float(((x @ text.T) ** 2).sum(0).max())
    # all-zero features (a degenerate input) have no curvature: no step rather than an infinite one
    return (4 * n / top_eig if top_eig > 1e-12 else 0.0), (n / (4 * top_text) if top_text > 1e-12 else 0.0)


@METHODS.register("lpp", help="LP++: visual prototypes plus per-class multiples of the class text, full-batch "
                              "with closed-form step sizes, epoch on validation (Huang et al., CVPR 2024)")
class LPP(FewShotClassifier):
    uses_text = True
    zero_shot_attr = "text_"  # consulted at prediction time (with_text)
    config_class = LPPConfig  # random_state seeds the bias initialisation

    def fit(self, x, y, *, text=None, val=None):
        x, y, val = self._check_fit(x, y, text, val)
        cfg = self._config()
        xt, yt = tensor(unit_rows(x)), tensor(y)
        self.text_ = text.class_means()
        text_w = tensor(self.text_)
        xv, yv = self._val_or_train(x, y, val)
        xv, yv = tensor(unit_rows(xv)), tensor(yv)
        onehot = F.one_hot(yt, self.n_classes_).float()
        gen = torch.Generator().manual_seed(self._seed())
        bound = 1 / np.sqrt(x.shape[1])  # nn.Linear's default bias initialisation
        weight = torch.nn.Parameter(onehot.T @ xt)
        bias = torch.nn.Parameter((drawn(torch.rand(self.n_classes_, generator=gen, device="cpu")) * 2 - 1) * bound)
        zero_shot_train = xt @ text_w.T
        class_means = (onehot.T @ zero_shot_train) / onehot.sum(0).clamp_min(1)[:, None]
        start = class_means.diagonal() if cfg.alpha_init == "own-class" else class_means
        alpha = torch.full((self.n_classes_,), cfg.alpha_init_scale * float(start.mean()), requires_grad=True)
        lr_w, lr_alpha = lpp_step_sizes(xt, text_w)
        opt = torch.optim.SGD([weight, bias], lr=lr_w, momentum=0.9)
        zero_shot_val = xv @ text_w.T
        best = None
        for epoch in range(cfg.epochs):
            logits = xt @ weight.T + bias + alpha * zero_shot_train
            loss = F.cross_entropy(logits, yt)
            opt.zero_grad()
            alpha.grad = None
            loss.backward()
            opt.step()
            if (epoch + 1) % cfg.alpha_every == 0:
                with torch.no_grad():
                    alpha -= lr_alpha * alpha.grad
            with torch.no_grad():
                acc = float(((xv @ weight.T + bias + alpha * zero_shot_val).argmax(1) == yv).float().mean())
            if best is None or acc >= best[0] or not cfg.select_epoch:
                best = (acc, epoch + 1, weight.detach().clone(), bias.detach().clone(), alpha.detach().clone())
        _, epoch, weight, bias, alpha = best
        self.coef_, self.intercept_, self.alpha_ = weight.cpu().numpy(), bias.cpu().numpy(), alpha.cpu().numpy()
        self.chosen_ = {"epoch": epoch, "lr_w": lr_w, "lr_alpha": lr_alpha}
        return self

    def _logits(self, x):
        x = unit_rows(x)
        return x @ self.coef_.T + self.intercept_ + self.alpha_ * (x @ self.text_.T)
