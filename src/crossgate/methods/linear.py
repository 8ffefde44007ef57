"""Image-only linear probe: multinomial logistic regression on unit-norm features."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import param
from .base import METHODS, FewShotClassifier, tensor, unit_rows


@dataclass
class LogRegConfig:
    l2_grid: tuple[float, ...] = param((1e-4, 1e-3, 1e-2), "candidate L2 strengths, chosen on validation; one "
                                       "value means no search")
    max_iter: int = param(200, "L-BFGS iterations per fit", positive=True)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float, max_iter: int = 200,
                 init: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Full-batch L-BFGS: exact minimiser of mean cross-entropy + l2 * ||W||^2 (W includes a bias column);
    (W, the iterations it took)."""
    xb = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    w = (init.clone() if init is not None else torch.zeros(n_classes, xb.shape[1])).requires_grad_(True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=max_iter, tolerance_grad=1e-6, tolerance_change=1e-9,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xb @ w.T, y) + l2 * (w[:, :-1] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), int(opt.state[w].get("n_iter", 0))


@METHODS.register("logreg", help="Image-only multinomial logistic regression fitted exactly (L-BFGS); L2 "
                                 "strength chosen on few-shot validation")
class LogisticProbe(FewShotClassifier):
    config_class = LogRegConfig  # the convex fit is deterministic from a zero start: random_state is unused

    def fit(self, x, y, *, text=None, val=None):
        x, y, val = self._check_fit(x, y, text, val)
        cfg = self._config()
        xt, yt = tensor(unit_rows(x)), tensor(y)
        best = None
        if val is None and len(cfg.l2_grid) > 1:
            self._val_or_train(x, y, val)  # which says it chooses on the training data: ours takes the first
        for l2 in cfg.l2_grid:  # best validation accuracy, ties broken by validation loss
            w, n_iter = fit_logistic(xt, yt, self.n_classes_, l2, cfg.max_iter)
            if val is None or len(cfg.l2_grid) == 1:
                best = (0.0, 0.0, l2, w, n_iter)
                break
            logits = tensor(unit_rows(val[0])) @ w[:, :-1].T + w[:, -1]
            yv = tensor(val[1])
            acc = float((logits.argmax(1) == yv).float().mean())
            loss = float(torch.nn.functional.cross_entropy(logits, yv))
            if best is None or (acc, -loss) > (best[0], best[1]):
                best = (acc, -loss, l2, w, n_iter)
        _, _, self.l2_, w, self.n_iter_ = best
        self.coef_, self.intercept_ = w[:, :-1].cpu().numpy(), w[:, -1].cpu().numpy()
        self.chosen_ = {"l2": self.l2_}
        return self

    def _logits(self, x):
        return unit_rows(x) @ self.coef_.T + self.intercept_
