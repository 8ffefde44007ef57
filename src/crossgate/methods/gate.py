"""Few-shot classifiers built on the dynamic gate (crossgate.fusion).

`gate` is the paper's pipeline (sections 3.4, 5.4-5.7): train the gate alone with the combined loss, then
classify its enhanced image features. The paper says only "accuracy evaluated on enhanced image
features"; we fit a text-initialised cosine head on them (Lin et al.'s cross-modal probe on enhanced
features), because it is the strongest simple head that uses no test data and starts from zero-shot.

`gate-joint` is ours: gate and head trained end to end with cross-entropy plus the combined loss, a
residual path x + β·enhanced (β learned, starting at 0, so training starts from the cross-modal probe),
a learned temperature, and k / d_proj chosen on the few-shot validation split.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..config import param
from ..errors import UserError
from ..fusion import DynamicGate, class_text_proj, gate_loss, resolve_k
from ..train import TrainConfig, cross_modal_batches, train
from .base import METHODS, FewShotClassifier, unit_rows
from .linear import LogisticProbe, LogRegConfig

LOGIT_SCALE = 100.0  # CLIP's and Lin et al.'s fixed cosine-logit scale


@dataclass
class GateConfig:
    flag_prefix: ClassVar[str] = "gate"

    d_proj: int = param(512, "shared projection size (the paper does not give it)", positive=True)
    k: int | str = param(5, "texts each image selects; 'all' for the whole pool", choices=("all",), positive=True)
    lambda_rec: float = param(0.75, "weight of the reconstruction loss (paper 5.6)")
    lambda_align: float = param(0.25, "weight of the alignment loss (paper 5.6)")
    lr: float = param(1e-3, "Adam learning rate (paper 5.6)", positive=True)
    epochs: int = param(20, "passes over the few-shot images (paper 5.6)", positive=True)
    step_epochs: int = param(5, "StepLR step, in epochs (paper 5.6)", positive=True)
    gamma: float = param(0.5, "StepLR decay (paper 5.6)", positive=True)
    eval_every: int = param(100, "validate every this many iterations, or at each epoch end if epochs are "
                                 "shorter", positive=True)
    batch_size: int = param(32, "samples per batch, images and class texts together (Lin et al.)", positive=True)
    text_ratio: float = param(0.5, "share of each batch that is class-text samples (paper 5.6)", below=1.0)
    text_space: str = param("image", "the gate's text pool: image (aligned) or native (text tower's own)",
                            choices=("image", "native"))
    init: str = param("tied", "tied (W_text = W_img, W_final = W_imgᵀ; image text space only) or default",
                      choices=("tied", "default"))
    head_epochs: int = param(300, "full-batch Adam steps of the head on enhanced features (gate only)",
                             positive=True)

    def train_config(self) -> TrainConfig:
        return TrainConfig(lr=self.lr, epochs=self.epochs, step_epochs=self.step_epochs, gamma=self.gamma,
                           eval_every=self.eval_every)

    def validate(self, n_texts: int, d_img: int, d_text: int) -> None:
        """Raise UserError, naming the flag to change, for settings this text pool cannot take."""
        if not 0 <= self.text_ratio < 1:
            raise UserError(f"gate text ratio must be in [0, 1), got {self.text_ratio} (--gate-text-ratio)")
        if self.text_space not in ("image", "native"):
            raise UserError(f"gate text space must be 'image' or 'native', got {self.text_space!r}")
        try:
            resolve_k(self.k, n_texts)
        except ValueError as err:
            raise UserError(f"{err} (--gate-k)") from None
        if self.init == "tied" and d_img != d_text:
            raise UserError(f"tied gate initialisation needs text features in image space ({d_text}-d text, "
                            f"{d_img}-d images); use --gate-init default or --gate-text-space image")


@dataclass
class _Data:
    """Tensors every gate method trains on: unit-norm images, the text pool and text samples."""

    x: torch.Tensor  # (n, d_img) few-shot images
    y: torch.Tensor
    pool: torch.Tensor  # (N, d_text) the gate's text pool: every class prompt x template
    pool_labels: torch.Tensor
    text_x: torch.Tensor  # (N, d_img) class texts in image space, used as extra training samples
    class_init: torch.Tensor  # (C, d_img) unit mean template feature per class
    xv: torch.Tensor | None
    yv: torch.Tensor | None

    def batch(self, img_idx, txt_idx):
        x = torch.cat([self.x[img_idx], self.text_x[txt_idx]])
        return x, torch.cat([self.y[img_idx], self.pool_labels[txt_idx]])


def _text_pool(text, text_space: str) -> torch.Tensor:
    """The gate's text pool: every prompt, unit norm, in image space or the text tower's own."""
    return torch.from_numpy(unit_rows(text.x if text_space == "image" else text.native))


def _prepare(x, y, text, val, text_space: str) -> _Data:
    t = torch.from_numpy
    return _Data(x=t(unit_rows(x)), y=t(y), pool=_text_pool(text, text_space),
                 pool_labels=t(text.labels.astype(np.int64)),
                 text_x=t(unit_rows(text.x)), class_init=t(text.class_means().astype(np.float32)),
                 xv=t(unit_rows(val[0])) if val else None, yv=t(val[1]) if val else None)


def _cosine_logits(features: torch.Tensor, weights: torch.Tensor, scale) -> torch.Tensor:
    return scale * F.normalize(features, dim=1) @ F.normalize(weights, dim=1).T


class _GateBase(FewShotClassifier):
    uses_text = True

    def _gate_output(self, x: torch.Tensor):
        with torch.no_grad():
            return self.gate_(x, self.pool_)

    def _store_text(self, text):
        self.texts_ = list(text.texts)
        self.text_labels_ = text.labels.astype(np.int64)

    def with_text(self, text):
        other = copy.copy(self)
        other._store_text(text)
        other.pool_ = _text_pool(text, self._config().text_space)
        return other

    @staticmethod
    def _gate_spec(gate: DynamicGate) -> dict:
        d_proj, d_img = gate.w_img.weight.shape
        return {"d_img": d_img, "d_text": gate.w_text.in_features, "d_proj": d_proj, "k": gate.k}

    @staticmethod
    def _new_gate(spec: dict) -> DynamicGate:
        return DynamicGate(spec["d_img"], spec["d_text"], spec["d_proj"], spec["k"])

    def explain(self, x) -> tuple[np.ndarray, np.ndarray]:
        """For each image, the indices (into the text pool, best first) and weights of its selected texts."""
        out = self._gate_output(torch.from_numpy(unit_rows(np.asarray(x, dtype=np.float32))))
        return out.indices.numpy(), out.weights.numpy()

    def top1_true_class_rate(self, x, y) -> float:
        """How often the gate's top-1 selected text belongs to the image's true class (a fraction)."""
        indices, _ = self.explain(x)
        return float(np.mean(self.text_labels_[indices[:, 0]] == np.asarray(y)))


@METHODS.register("gate", help="The paper's dynamic gate trained with its combined loss, then a "
                               "text-initialised head on its output (Shah, Attention Improves Multimodality)")
class Gate(_GateBase):
    config_class = GateConfig  # None means the paper's defaults; random_state seeds init and batch order

    def fit(self, x, y, *, text=None, val=None):
        x, y, val = self._check_fit(x, y, text, val)
        cfg = self._config()
        data = _prepare(x, y, text, val, cfg.text_space)
        cfg.validate(len(text.labels), data.x.shape[1], data.pool.shape[1])
        gen = torch.Generator().manual_seed(self._seed())
        torch.manual_seed(self._seed())
        gate = DynamicGate(data.x.shape[1], data.pool.shape[1], cfg.d_proj, cfg.k, cfg.init)

        def loss_fn(batch):
            xb, yb = data.batch(*batch)
            out = gate(xb, data.pool)
            return gate_loss(gate, out, xb, yb, data.pool_labels, self.n_classes_, cfg.lambda_rec,
                             cfg.lambda_align).total

        def evaluate():
            xe, ye = (data.xv, data.yv) if data.xv is not None else (data.x, data.y)
            out = gate(xe, data.pool)
            targets = class_text_proj(out.text_proj, data.pool_labels, self.n_classes_)
            feats = out.enhanced if out.enhanced.shape[1] == targets.shape[1] else gate.shared_space(out.enhanced)
            acc = float((_cosine_logits(feats, targets, 1.0).argmax(1) == ye).float().mean())
            loss = gate_loss(gate, out, xe, ye, data.pool_labels, self.n_classes_, cfg.lambda_rec,
                             cfg.lambda_align).total
            return acc, -float(loss)

        result = train(gate, loss_fn,
                       lambda epoch: cross_modal_batches(len(data.x), len(data.pool_labels), cfg.batch_size,
                                                         cfg.text_ratio, gen),
                       evaluate, cfg.train_config())
        gate.requires_grad_(False)
        self.gate_ = gate
        self.pool_ = data.pool
        self.head_ = self._fit_head(data, cfg.head_epochs)
        self._store_text(text)
        self.chosen_ = {"gate_best_iteration": result.best_iteration, "gate_iterations": result.iterations}
        return self

    def _module_spec(self, name, module):
        return self._gate_spec(module)

    def _build_module(self, name, spec):
        return self._new_gate(spec)

    def _fit_head(self, data: _Data, epochs: int) -> torch.Tensor:
        """Cosine head on enhanced features of the images and class texts, initialised from the texts."""
        with torch.no_grad():
            feats = self.gate_(torch.cat([data.x, data.text_x]), data.pool).enhanced
            labels = torch.cat([data.y, data.pool_labels])
            val_feats = self.gate_(data.xv, data.pool).enhanced if data.xv is not None else feats
            val_labels = data.yv if data.xv is not None else labels
        head = nn.Module()
        head.weight = nn.Parameter(data.class_init.clone())

        def loss_fn(_):
            return F.cross_entropy(_cosine_logits(feats, head.weight, LOGIT_SCALE), labels)

        def evaluate():
            logits = _cosine_logits(val_feats, head.weight, LOGIT_SCALE)
            return float((logits.argmax(1) == val_labels).float().mean()), -float(F.cross_entropy(logits, val_labels))

        train(head, loss_fn, lambda epoch: [None], evaluate,
              TrainConfig(lr=1e-3, epochs=epochs, step_epochs=10 ** 9, eval_every=10))
        return head.weight.detach()

    def _logits(self, x):
        with torch.no_grad():
            enhanced = self._gate_output(torch.from_numpy(unit_rows(x))).enhanced
            return _cosine_logits(enhanced, self.head_, LOGIT_SCALE).numpy()


@dataclass
class JointConfig:
    steps: int = param(100, "full-batch Adam steps (few-shot sets are small enough to use every sample each step)",
                       positive=True)
    lr: float = param(1e-3, "Adam learning rate", positive=True)
    eval_every: int = param(5, "validate every this many steps (and the warm start); the best state is kept",
                            positive=True)
    center: bool = param(True, "subtract the few-shot images' mean (texts: the pool's mean) before normalising")
    aux_weight: float = param(1.0, "weight of the paper's combined gate loss next to cross-entropy")
    text_weight: float = param(0.5, "share of the cross-entropy on class-text samples (Lin et al.'s batch ratio)")
    l2_grid: tuple[float, ...] = param((1e-4, 1e-3, 1e-2), "L2 strengths of the warm-start probe, chosen on "
                                       "validation")
    k_grid: tuple[int | str, ...] = param((1, 5, "all"), "candidate k, chosen on validation ('all' = whole pool)",
                                          choices=("all",), positive=True)
    d_proj_grid: tuple[int, ...] = param((256,), "candidate projection sizes, chosen on validation", positive=True)
    lambda_rec: float = param(0.75, "weight of the gate's reconstruction loss (paper 5.6)")
    lambda_align: float = param(0.25, "weight of the gate's alignment loss (paper 5.6)")
    text_space: str = param("image", "the gate's text pool: image (aligned) or native (text tower's own)",
                            choices=("image", "native"))
    init: str = param("tied", "gate initialisation: tied or default", choices=("tied", "default"))

    def gate(self, k, d_proj) -> GateConfig:
        return GateConfig(d_proj=d_proj, k=k, lambda_rec=self.lambda_rec, lambda_align=self.lambda_align,
                          text_space=self.text_space, init=self.init)


class _JointModel(nn.Module):
    """logits = W z + b + s·100·cos(z, class texts), z = x + β·gate(x).enhanced.

    Warm-started at the validation-chosen logistic-regression probe (β = s = 0), so training only keeps
    what the gate and the text prior add on validation.
    """

    def __init__(self, gate: DynamicGate, probe: torch.Tensor, class_text: torch.Tensor):
        super().__init__()
        self.gate = gate
        self.beta = nn.Parameter(torch.zeros(()))
        self.weight = nn.Parameter(probe[:, :-1].clone())
        self.bias = nn.Parameter(probe[:, -1].clone())
        self.text_scale = nn.Parameter(torch.zeros(()))
        self.register_buffer("class_text", class_text)

    def forward(self, x: torch.Tensor, pool: torch.Tensor):
        out = self.gate(x, pool)
        z = x + self.beta * out.enhanced
        logits = z @ self.weight.T + self.bias + self.text_scale * _cosine_logits(z, self.class_text, LOGIT_SCALE)
        return logits, out


def _centered_class_text(text_x: torch.Tensor, labels: torch.Tensor, txt_mean: torch.Tensor, n_classes: int):
    """Unit class means of the centered, renormalised class texts (texts labelled -1 belong to no class)."""
    text_x = F.normalize(text_x - txt_mean, dim=1)
    own = labels >= 0
    return text_x, F.normalize(class_text_proj(text_x[own], labels[own], n_classes), dim=1)


def _center(data: _Data) -> tuple[_Data, dict[str, torch.Tensor]]:
    """Remove the common direction of each modality, estimated on training data only."""
    means = {"img": data.x.mean(0), "txt": data.text_x.mean(0), "pool": data.pool.mean(0)}
    norm = F.normalize
    text_x, class_init = _centered_class_text(data.text_x, data.pool_labels, means["txt"], len(data.class_init))
    return (replace(data, x=norm(data.x - means["img"], dim=1), pool=norm(data.pool - means["pool"], dim=1),
                    text_x=text_x, class_init=class_init,
                    xv=norm(data.xv - means["img"], dim=1) if data.xv is not None else None), means)


@METHODS.register("gate-joint", help="Ours: probe warm start + residual gate + text prior, trained end to end; "
                                     "k chosen on validation")
class GateJoint(_GateBase):
    config_class = JointConfig  # optimisation, centering, the gate's loss and the validation grid

    def fit(self, x, y, *, text=None, val=None):
        x, y, val = self._check_fit(x, y, text, val)
        cfg = self._config()
        data = _prepare(x, y, text, val, cfg.text_space)
        self.img_mean_ = torch.zeros(data.x.shape[1])
        self.txt_mean_, self.pool_mean_ = torch.zeros(data.text_x.shape[1]), torch.zeros(data.pool.shape[1])
        if cfg.center:
            data, means = _center(data)
            self.img_mean_, self.txt_mean_, self.pool_mean_ = means["img"], means["txt"], means["pool"]
        probe = LogisticProbe(LogRegConfig(l2_grid=cfg.l2_grid)).fit(data.x.numpy(), data.y.numpy(), val=(
            (data.xv.numpy(), data.yv.numpy()) if data.xv is not None else None))
        # LogisticProbe normalises rows again; ours are unit-norm already, so its solution applies as is
        probe_w = torch.from_numpy(np.concatenate([probe.coef_, probe.intercept_[:, None]], axis=1))
        n_texts = len(text.labels)
        ks = list(dict.fromkeys(k if k == "all" else min(k, n_texts) for k in cfg.k_grid))
        best = None
        for d_proj in cfg.d_proj_grid:
            for k in ks:
                trial = cfg.gate(k, d_proj)
                trial.validate(n_texts, data.x.shape[1], data.pool.shape[1])
                model, result = self._fit_one(data, cfg, trial, probe_w, probe.l2_)
                if best is None or result.best_score > best[0]:
                    best = (result.best_score, model, trial, result)
        _, self.model_, trial, result = best
        self.pool_ = data.pool
        self._store_text(text)
        self.chosen_ = {"k": trial.k, "d_proj": trial.d_proj, "l2": probe.l2_,
                        "beta": round(float(self.model_.beta), 4),
                        "text_scale": round(float(self.model_.text_scale), 4), "best_step": result.best_iteration}
        return self

    def _fit_one(self, data: _Data, cfg: JointConfig, gcfg: GateConfig, probe_w: torch.Tensor, l2: float):
        torch.manual_seed(self._seed())
        gate = DynamicGate(data.x.shape[1], data.pool.shape[1], gcfg.d_proj, gcfg.k, gcfg.init)
        model = _JointModel(gate, probe_w, data.class_init)
        n_classes = self.n_classes_

        # images and class-text samples in one batch; cross-entropy weighted by modality (Lin's batch ratio)
        xb, yb = torch.cat([data.x, data.text_x]), torch.cat([data.y, data.pool_labels])
        n_img, n_txt = len(data.y), len(data.pool_labels)
        ce_weights = torch.cat([torch.full((n_img,), (1 - cfg.text_weight) / n_img),
                                torch.full((n_txt,), cfg.text_weight / n_txt)])

        def loss_fn(_):
            logits, out = model(xb, data.pool)
            aux = gate_loss(model.gate, out, xb, yb, data.pool_labels, n_classes, gcfg.lambda_rec, gcfg.lambda_align)
            ce = (ce_weights * F.cross_entropy(logits, yb, reduction="none")).sum()
            # the paper's L_align sums over the batch; per sample here, so a full batch weighs like a minibatch
            gate_term = gcfg.lambda_rec * aux.rec + gcfg.lambda_align * aux.align / len(yb)
            return ce + cfg.aux_weight * gate_term + l2 * (model.weight ** 2).sum()

        def evaluate():
            xe, ye = (data.xv, data.yv) if data.xv is not None else (data.x, data.y)
            logits, _ = model(xe, data.pool)
            return float((logits.argmax(1) == ye).float().mean()), -float(F.cross_entropy(logits, ye))

        result = train(model, loss_fn, lambda step: [None], evaluate,
                       TrainConfig(lr=cfg.lr, epochs=cfg.steps, step_epochs=max(1, cfg.steps // 4), gamma=0.5,
                                   eval_every=cfg.eval_every, eval_at_start=True))
        model.requires_grad_(False)
        return model, result

    def _module_spec(self, name, module):
        return {"gate": self._gate_spec(module.gate), "n_classes": len(module.class_text)}

    def _build_module(self, name, spec):
        gate = self._new_gate(spec["gate"])
        d_img = spec["gate"]["d_img"]
        return _JointModel(gate, torch.zeros(spec["n_classes"], d_img + 1), torch.zeros(spec["n_classes"], d_img))

    def with_text(self, text):
        other = super().with_text(text)
        other.pool_ = F.normalize(other.pool_ - self.pool_mean_, dim=1)  # centred as at fit time
        other.model_ = copy.deepcopy(self.model_)
        labels = torch.from_numpy(text.labels.astype(np.int64))
        _, class_text = _centered_class_text(torch.from_numpy(unit_rows(text.x)), labels, self.txt_mean_,
                                             self.n_classes_)
        other.model_.class_text = class_text
        return other

    def _inputs(self, x: np.ndarray) -> torch.Tensor:
        return F.normalize(torch.from_numpy(unit_rows(x)) - self.img_mean_, dim=1)

    def _gate_output(self, x: torch.Tensor):
        with torch.no_grad():
            return self.model_.gate(F.normalize(x - self.img_mean_, dim=1), self.pool_)

    def _logits(self, x):
        with torch.no_grad():
            return self.model_(self._inputs(x), self.pool_)[0].numpy()
