"""Lin et al.'s linear probes, with their hyperparameter search trained as one batched model.

Every setting of the search (lr × weight decay × batch size) is a slice of one (S, C, D) weight tensor;
a hand-written AdamW with per-setting learning rates and decay updates them together, so the search costs
one model's Python-level steps instead of twelve. Inputs are unit-norm; logits are 100 · x Wᵀ (no bias).
Each batch is half images, half class-text samples (cross-modal) or images only (image-only probe).
"""
from __future__ import annotations

import itertools
import math
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..config import param
from .base import METHODS, FewShotClassifier, unit_rows

LOGIT_SCALE = 100.0


@dataclass
class ProbeSearch:
    flag_prefix: ClassVar[str] = "probe"  # one set of flags, --probe-*, for linear and crossmodal

    lrs: tuple[float, ...] = param((1e-3, 1e-4), "AdamW learning rates (Lin et al.)", positive=True)
    weight_decays: tuple[float, ...] = param((0.0, 1e-2, 1e-4), "decoupled weight decays (Lin et al.)")
    batch_sizes: tuple[int, ...] = param((8, 32), "samples per batch, images and texts together (Lin et al.); a "
                                         "size whose text or image half is not smaller than the texts or "
                                         "images is not trained, as in Lin et al.", positive=True)
    iterations: int = param(12_800, "updates per setting (Lin et al.)", positive=True)
    warmup: int = param(50, "linear warm-up updates (1e-5 at update 1), then cosine decay (Lin et al.)")
    eval_every: int = param(100, "validate after updates 1, 1 + this, 1 + 2·this, ... (Lin et al.); the best "
                                 "(setting, update) is kept", positive=True)
    # benchmarks/fit_speed.py --check-patience measures whether early stopping changes choices
    patience: int | None = param(None, "stop a setting after this many validations without a better accuracy "
                                       "(none: Lin et al., train every update)", positive=True)

    def settings(self) -> list[tuple[float, float, int]]:
        return list(itertools.product(self.lrs, self.weight_decays, self.batch_sizes))


WARMUP_MIN_LR = 1e-5  # Lin et al.'s learning rate at update 1 (their LinearWarmupScheduler)


def lr_at(step: int, warmup: int, total: int) -> tuple[float, float]:
    """(multiplier of the base learning rate, absolute rate) at update `step` (from 1), as Lin et al.'s
    scheduler.py gives it: update 1 runs at 1e-5; updates 2..warmup at base·(step-1)/warmup; then cosine
    over `total` updates counted from update warmup+1, so the last rate is small but not 0. Exactly one of
    the two is non-zero."""
    if warmup > 0 and step == 1:
        return 0.0, WARMUP_MIN_LR
    if step <= warmup:
        return (step - 1) / warmup, 0.0
    return 0.5 * (1 + math.cos(math.pi * (step - warmup - 1) / total)), 0.0


def valid_batch_sizes(batch_sizes, n_images: int, n_texts: int) -> list[int]:
    """Lin et al.'s rule (train.py, get_valid_batch_sizes): train a batch size only if its text half is
    smaller than the number of texts and its image half smaller than the number of training images. When
    none fits (tiny folders), the smallest is trained rather than nothing."""
    valid = []
    for bs in batch_sizes:
        n_txt = bs // 2 if n_texts else 0
        n_img = bs - n_txt
        if (n_txt == 0 or n_txt < n_texts) and (n_img == 0 or n_img < n_images):
            valid.append(bs)
    return valid or [min(batch_sizes)]


@dataclass
class SearchResult:
    weights: np.ndarray  # (C, D) the chosen checkpoint
    setting: tuple[float, float, int]
    step: int
    val_acc: float
    steps_run: int  # steps taken by the longest-running setting
    batch_sizes: list  # the batch sizes trained (Lin et al.'s validity rule)


@dataclass
class _Track:
    """Training state of settings that share a batch size, stacked along the first axis."""

    ids: list[int]  # positions in the settings list
    lr: torch.Tensor  # (S, 1, 1)
    wd: torch.Tensor
    n_img: int  # images per batch
    n_txt: int  # class-text samples per batch
    w: torch.Tensor  # (S, C, D): the gradient x_bᵀ·g is then one (C × B)(B × D) product per setting, 5x
    # faster on a CPU than into (S, D, C) (the logits 2x), where C is small
    m: torch.Tensor
    v: torch.Tensor
    gens: list[torch.Generator]


def adamw_update(tr: _Track, xb: torch.Tensor, yb: torch.Tensor, minus_one: torch.Tensor, step: int,
                 search: ProbeSearch, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
    """One AdamW update (torch.optim.AdamW's, amsgrad off) of every stacked setting of a track on its batch
    xb (S, B, D), yb (S, B), for the mean cross-entropy of 100 · x Wᵀ; minus_one is -1/B in shape (S, B, 1)."""
    size = xb.shape[1]
    grad_logits = torch.bmm(xb, tr.w.transpose(1, 2)).mul_(LOGIT_SCALE).softmax(-1).div_(size)
    grad_logits.scatter_add_(2, yb[..., None], minus_one)  # mean of (softmax - onehot)
    grad = torch.bmm(grad_logits.transpose(1, 2), xb).mul_(LOGIT_SCALE)  # (S, C, D)
    factor, absolute = lr_at(step, search.warmup, search.iterations)
    lr = tr.lr * factor + absolute
    tr.w.mul_(1 - lr * tr.wd)  # decoupled weight decay
    tr.m.lerp_(grad, 1 - beta1)
    tr.v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = (tr.v / (1 - beta2 ** step)).sqrt_().add_(eps)
    tr.w.sub_(lr / (1 - beta1 ** step) * tr.m / denom)


def _train_settings(ids, settings, pool, labels, n_images, xv, yv, init, search, seed, results):
    """Train the settings `ids` (each with its own batch stream) and store per setting its best
    (val accuracy, step, weights, steps run) in `results`. Runs on the device of `pool`."""
    device = pool.device
    # softmax of 100·cosine logits underflows into subnormal floats, which the CPU computes with 5-10x
    # slower; flushed to zero in this worker thread (values below 1.2e-38 change no choice)
    torch.set_flush_denormal(True)
    n_texts = len(pool) - n_images
    tracks = []
    for bs in sorted({settings[i][2] for i in ids}):
        group = [i for i in ids if settings[i][2] == bs]
        n_txt = bs // 2 if n_texts else 0
        w = torch.as_tensor(np.ascontiguousarray(init, dtype=np.float32), device=device)[None].repeat(
            len(group), 1, 1)
        tracks.append(_Track(ids=group, lr=torch.tensor([settings[i][0] for i in group], device=device).view(-1, 1, 1),
                             wd=torch.tensor([settings[i][1] for i in group], device=device).view(-1, 1, 1),
                             n_img=bs - n_txt,
                             n_txt=n_txt, w=w, m=torch.zeros_like(w), v=torch.zeros_like(w),
                             gens=[torch.Generator().manual_seed(zlib.crc32(repr((seed, *settings[i])).encode()))
                                   for i in group]))
    stale = {i: 0 for i in ids}

    def validate(tr: _Track, step: int):
        acc = (torch.matmul(xv, tr.w.transpose(1, 2)).argmax(-1) == yv).float().mean(-1).tolist()  # (S,): one sync
        for j, i in enumerate(tr.ids):
            if acc[j] > results[i][0]:
                results[i] = (acc[j], step, tr.w[j].clone(), step)
                stale[i] = 0
            else:
                stale[i] += 1
            results[i] = (*results[i][:3], block_start + block)  # steps run

    for block_start in range(0, search.iterations, search.eval_every):
        block = min(search.eval_every, search.iterations - block_start)
        for tr in tracks:
            # this block's batches, drawn per setting on the CPU (the same draws on every device): image slots
            # from the images, text slots from the texts
            idx = torch.stack([torch.cat([torch.randint(n_images, (block, tr.n_img), generator=g),
                                          n_images + torch.randint(max(n_texts, 1), (block, tr.n_txt), generator=g)],
                                         dim=1) for g in tr.gens], dim=1).to(device)  # (block, S, B)
            batch_labels = labels[idx]
            size = tr.n_img + tr.n_txt
            minus_one = torch.full((len(tr.ids), size, 1), -1.0 / size, device=device)
            for t in range(block):
                step = block_start + t + 1
                xb = pool.index_select(0, idx[t].reshape(-1)).view(*idx[t].shape, -1)  # pool[idx[t]], faster
                adamw_update(tr, xb, batch_labels[t], minus_one, step, search)
                if t == 0:  # Lin et al. validate after updates 1, 1 + eval_every, ...
                    validate(tr, step)
        if search.patience is not None:
            for tr in tracks:
                keep = [j for j, i in enumerate(tr.ids) if stale[i] < search.patience]
                if len(keep) < len(tr.ids):
                    k = torch.tensor(keep, dtype=torch.long, device=device)
                    tr.ids, tr.gens = [tr.ids[j] for j in keep], [tr.gens[j] for j in keep]
                    tr.lr, tr.wd, tr.w, tr.m, tr.v = tr.lr[k], tr.wd[k], tr.w[k], tr.m[k], tr.v[k]
            tracks = [tr for tr in tracks if tr.ids]
            if not tracks:
                break


def search_probe(x: np.ndarray, y: np.ndarray, text_x: np.ndarray | None, text_y: np.ndarray | None,
                 xv: np.ndarray, yv: np.ndarray, init: np.ndarray, search: ProbeSearch, seed: int,
                 settings: list[tuple[float, float, int]] | None = None, threads: int | None = None,
                 device: str = "cpu") -> SearchResult:
    """Train every setting from `init` (C, D); choose the (setting, checkpoint) with the best val accuracy,
    ties to the earlier setting in grid order, then the earlier step.

    Each setting has its own random batch stream. Settings of one batch size train stacked as one track;
    the tracks run in up to `threads` Python threads (torch ops release the GIL), each single-threaded,
    which beats intra-op threads on these small matrices. The tracks are the same whatever `threads` is,
    so the result does not depend on it.
    """
    settings = settings or search.settings()
    n_texts = 0 if text_x is None else len(text_x)
    trained = valid_batch_sizes(sorted({s[2] for s in settings}), len(x), n_texts)
    settings = [s for s in settings if s[2] in trained]
    threads = threads or torch.get_num_threads()  # 1 inside bench, which fits on one core per process
    parts = [[i for i, s in enumerate(settings) if s[2] == bs] for bs in sorted({s[2] for s in settings})]
    xs = unit_rows(x) if text_x is None else np.concatenate([unit_rows(x), unit_rows(text_x)])
    pool = torch.as_tensor(xs, device=device)
    labels = torch.as_tensor(y if text_y is None else np.concatenate([y, text_y]).astype(np.int64), device=device)
    xv_t, yv_t = torch.as_tensor(unit_rows(xv), device=device), torch.as_tensor(yv, device=device)
    results = {i: (-1.0, 0, None, 0) for i in range(len(settings))}
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(parts)))) as pool_exec:
            futures = [pool_exec.submit(_train_settings, part, settings, pool, labels, len(x), xv_t, yv_t, init,
                                        search, seed, results) for part in parts]
            for f in futures:
                f.result()
    finally:
        torch.set_num_threads(previous_threads)
    choice = max(range(len(settings)), key=lambda i: (results[i][0], -i))  # ties: the earlier setting
    acc, step, weights, _ = results[choice]
    return SearchResult(weights=weights.cpu().numpy(), setting=settings[choice], step=step, val_acc=acc,
                        steps_run=max(r[3] for r in results.values()), batch_sizes=trained)


class _SearchedProbe(FewShotClassifier):
    cross_modal = False
    config_class = ProbeSearch  # None means Lin et al.'s grid and schedule; random_state seeds init and batches

    def _init(self, text, dim: int, seed: int) -> np.ndarray:
        raise NotImplementedError

    def fit(self, x, y, *, text=None, val=None):
        x, y, val = self._check_fit(x, y, text, val)
        seed = self._seed()
        xv, yv = self._val_or_train(x, y, val)
        tx, ty = (text.x, text.labels.astype(np.int64)) if self.cross_modal else (None, None)
        result = search_probe(x, y, tx, ty, xv, yv, self._init(text, x.shape[1], seed), self._config(), seed,
                              device=str(torch.get_default_device()))  # fit's device; threads do not inherit it
        self.coef_ = result.weights
        lr, wd, bs = result.setting
        self.chosen_ = {"lr": lr, "weight_decay": wd, "batch_size": bs, "step": result.step,
                        "steps_run": result.steps_run, "batch_sizes_trained": result.batch_sizes}
        return self

    def _logits(self, x):
        return LOGIT_SCALE * unit_rows(x) @ self.coef_.T


@METHODS.register("linear", help="Image-only linear probe, random init, Lin et al.'s search (lr x weight decay x "
                                 "batch size) on validation (Lin et al., CVPR 2023)")
class LinearProbe(_SearchedProbe):

    def _init(self, text, dim, seed):
        rng = np.random.default_rng(seed)
        bound = 1 / math.sqrt(dim)  # nn.Linear's default range
        return rng.uniform(-bound, bound, size=(self.n_classes_, dim)).astype(np.float32)


@METHODS.register("crossmodal", help="Cross-modal linear probe: text-initialised head, half of every batch "
                                     "class-text samples (Lin et al., CVPR 2023)")
class CrossModalProbe(_SearchedProbe):
    uses_text = True
    cross_modal = True

    def _init(self, text, dim, seed):
        return text.raw_class_means()  # Lin et al. average the raw template features, then normalise
