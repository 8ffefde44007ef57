"""How gate-joint should choose its base: candidate rules judged on validation images held out from the
few-shot draw (issue 24), never on test.

For each (dataset, shots, seed) the bases are fitted on the draw as bench fits them (their own selection on
the few-shot validation split); every rule then picks a base (or a weighting of the bases) from the
few-shot validation images alone, and is scored on the held-out images: every training and validation image
outside the draw, which no fit and no rule saw. Each rule runs on the bases' logits put on one footing two
ways: `row` (each image's centred logits scaled to unit deviation, what gate-joint did before) and `scale`
(each base's centred logits divided by one number, their root mean square over the draw's training and
validation images: what gate-joint does). Test accuracy is printed beside it for the record; no choice
reads it.

    python benchmarks/base_selection_study.py [--datasets fashion-mnist,imagefolder:DIR] [--shots 1,2,4,8,16]

Prints one JSON object: per dataset, rule:footing and shot count the mean held-out validation accuracy and the mean
test accuracy over seeds, and per dataset the bases' own means.
"""
from __future__ import annotations

import numpy as np
import torch
from held_out import held_out_images, means, run
from torch.nn import functional as F

from crossgate.methods.gate import JointConfig, centred, logit_scale
from crossgate.pipeline import fit_one, load_features


def _cross_entropy(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    z = logits * temperature
    z = z - z.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]))


def _calibrated_loss(logits: np.ndarray, y: np.ndarray) -> float:
    """Validation cross-entropy at the best of a few temperatures: rescaled logits have no scale of their
    own, and a loss ranks candidates that accuracy on a handful of images calls equal."""
    return min(_cross_entropy(logits, y, t) for t in (0.5, 1.0, 2.0, 4.0, 8.0))


def _stacked(val: dict[str, np.ndarray], y: np.ndarray, prior: dict[str, float], shrink: float) -> dict[str, float]:
    """Weights on the bases' rescaled logits minimising validation cross-entropy plus shrink ·
    ||w - prior||² (a convex combination; with few validation images the prior decides)."""
    names = list(val)
    stack = torch.as_tensor(np.stack([val[n] for n in names]), dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.long)
    p0 = torch.as_tensor([prior.get(n, 0.0) for n in names], dtype=torch.float64)
    a = torch.log(p0.clamp_min(1e-3)).clone().requires_grad_(True)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([a, log_t], lr=0.05)
    for _ in range(200):
        w = torch.softmax(a, 0)
        loss = F.cross_entropy(torch.einsum("b,bnc->nc", w, stack) * log_t.exp(), yt) + shrink * ((w - p0) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = torch.softmax(a, 0).detach().numpy()
    return {n: float(v) for n, v in zip(names, w, strict=True)}


BASE_RULES = ("ensemble-or-logreg", "ensemble", "best-single", "best-single-loss", "best-single+zs", "stacked",
              "stacked+zs")


def choose_base_weights(rule: str, val: dict[str, np.ndarray], y: np.ndarray,
                        text_prior: np.ndarray | None = None) -> dict[str, float]:
    """The base as weights on the bases' validation logits, on one footing, `val` (name -> (n, C)), by `rule`:
    ensemble-or-logreg (what gate-joint did: the two by accuracy), ensemble (equal weights), best-single
    (the ensemble or one base, by accuracy, ties to the ensemble), best-single-loss (by accuracy, ties by
    calibrated loss), +zs (zero-shot, `text_prior`, is a candidate too), stacked (weights learned on
    validation, shrunk towards equal weights)."""
    names = list(val)
    if "+zs" in rule and text_prior is not None:
        val = {**val, "zeroshot": text_prior}
    equal = {n: 1.0 / len(names) for n in names}
    if rule == "ensemble":
        return equal
    if rule.startswith("stacked"):
        return _stacked(val, y, equal, shrink=4.0 / max(1, len(y)) ** 0.5)
    candidates = {"ensemble": equal, **{n: {n: 1.0} for n in val}}
    if rule == "ensemble-or-logreg":
        candidates = {c: candidates[c] for c in ("ensemble", "logreg") if c in candidates}

    def mix(weights):
        return sum(w * val[n] for n, w in weights.items())

    def score(c):
        logits = mix(candidates[c])
        acc = float(np.mean(logits.argmax(1) == y))
        return (acc, -_calibrated_loss(logits, y)) if rule.endswith("-loss") or "+zs" in rule else (acc,)

    scores = {c: score(c) for c in candidates}
    best = max(scores, key=lambda c: (scores[c], -list(candidates).index(c)))
    return candidates[best]


def footings(fitted: dict, reference: np.ndarray) -> dict:
    """Per footing, a function from images to each base's logits on it (name -> (n, C))."""
    scales = {b: logit_scale(torch.as_tensor(clf._logits(reference), dtype=torch.float64)) for b, clf in fitted.items()}

    def row(x):
        out = {}
        for b, clf in fitted.items():
            c = centred(torch.as_tensor(clf._logits(x), dtype=torch.float64))
            out[b] = (c / (c.std(1, keepdim=True, correction=0) + 1e-9)).numpy()
        return out

    def scale(x):
        return {b: centred(torch.as_tensor(clf._logits(x), dtype=torch.float64)).numpy() / scales[b]
                for b, clf in fitted.items()}
    return {"row": row, "scale": scale}


def study(dataset: str, shots: list[int], seeds: list[int]) -> dict:
    _, _, feats = load_features(dataset, "lite")
    bases = list(JointConfig().bases)
    out: dict = {"rules": {}, "bases": {}}
    for k in shots:
        for seed in seeds:
            split = feats.few_shot(k, seed)
            xtr = feats.train.x[split.train]
            xv, yv = feats.val.x[split.val], feats.val.labels[split.val]
            xh, yh = held_out_images(feats, split)
            fitted = {b: fit_one(feats, b, k, seed)[0] for b in [*bases, "zeroshot"]}
            labels = {"held": yh, "test": feats.test.labels}
            for footing, logits_of in footings(fitted, np.concatenate([xtr, xv])).items():
                logits = {part: logits_of(x) for part, x in (("val", xv), ("held", xh), ("test", feats.test.x))}
                if footing == "row":
                    for b in fitted:
                        for part in ("held", "test"):
                            acc = float(np.mean(logits[part][b].argmax(1) == labels[part]))
                            out["bases"].setdefault(b, {}).setdefault(part, {}).setdefault(k, []).append(100 * acc)
                for rule in BASE_RULES:
                    weights = choose_base_weights(rule, {b: logits["val"][b] for b in bases}, yv,
                                                  text_prior=logits["val"]["zeroshot"])
                    for part in ("held", "test"):
                        mix = sum(w * logits[part][b] for b, w in weights.items() if w)
                        acc = float(np.mean(mix.argmax(1) == labels[part]))
                        out["rules"].setdefault(f"{rule}:{footing}", {}).setdefault(part, {}).setdefault(k, []).append(
                            100 * acc)
    return {kind: means(out[kind]) for kind in ("rules", "bases")}


if __name__ == "__main__":
    run(study, __doc__, "1,2,4,8,16")
