"""A small training loop that knows nothing about the model: config in, best-on-validation state out."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from .errors import UserError


@dataclass
class TrainConfig:
    lr: float = 1e-3  # Adam learning rate (paper, section 5.6)
    weight_decay: float = 0.0  # L2 penalty passed to the optimiser
    epochs: int = 20  # passes over the few-shot images (paper: 20)
    step_epochs: int = 5  # StepLR step size in epochs (paper: 5)
    gamma: float = 0.5  # StepLR decay factor (paper: 0.5)
    eval_every: int = 100  # iterations between validations; also at each epoch end when epochs are shorter
    eval_at_start: bool = False  # also validate the initial state, so a warm start is kept if training hurts
    eval_short_epochs: bool = True  # validate at the end of epochs shorter than eval_every; False for full-batch
    # loops, whose "epoch" is one step (else they validate at every step, whatever eval_every says)


@dataclass
class TrainResult:
    best_score: tuple  # the validation score of the kept state (larger is better)
    best_iteration: int
    iterations: int
    history: list = field(default_factory=list)  # (iteration, score) of every validation


def train(module: torch.nn.Module, loss_fn: Callable[[object], torch.Tensor],
          epoch_batches: Callable[[int], Iterable], evaluate: Callable[[], tuple],
          config: TrainConfig) -> TrainResult:
    """Adam + StepLR; validate on schedule, keep the best state (ties: the earlier one) and restore it.

    `epoch_batches(epoch)` gives that epoch's batches; `loss_fn(batch)` a scalar; `evaluate()` a tuple
    compared lexicographically, larger is better (e.g. (val accuracy, -val loss)).
    """
    params = [p for p in module.parameters() if p.requires_grad]
    # fused: one pass over each parameter per step instead of seven (a fifth of a gate fit on a CPU)
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_epochs, gamma=config.gamma)
    best = (None, -1, _snapshot(module))
    history = []
    iteration = 0

    def validate():
        nonlocal best
        module.eval()
        with torch.no_grad():
            score = tuple(evaluate())
        module.train()
        history.append((iteration, score))
        if best[0] is None or score > best[0]:
            best = (score, iteration, _snapshot(module))

    module.train()
    if config.eval_at_start:
        validate()
    for epoch in range(config.epochs):
        n_batches = 0
        for batch in epoch_batches(epoch):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(batch)
            if not math.isfinite(loss.item()):
                raise UserError(f"training diverged: the loss became {float(loss)} at iteration {iteration}; "
                                "lower the learning rate (the method's --<method>-lr flag, e.g. --gate-lr)")
            loss.backward()
            optimizer.step()
            iteration += 1
            n_batches += 1
            if iteration % config.eval_every == 0:
                validate()
        if config.eval_short_epochs and n_batches < config.eval_every and (not history or history[-1][0] != iteration):
            validate()
        scheduler.step()
    if not history or history[-1][0] != iteration:  # the final state is a candidate too
        validate()
    module.load_state_dict(best[2])
    module.eval()
    return TrainResult(best_score=best[0], best_iteration=best[1], iterations=iteration, history=history)


def _snapshot(module: torch.nn.Module) -> dict:
    """A copy of the module's state (a deepcopy of the state dict cost more than a training step)."""
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def cross_modal_batches(n_images: int, n_texts: int, batch_size: int, text_ratio: float,
                        generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of (image indices, text indices) batches, as Lin et al. mix modalities.

    An epoch is one shuffled pass over the images; each batch holds round(batch_size * text_ratio) text
    samples drawn without replacement from a fresh shuffle of the text pool (cycled as needed).
    """
    n_text = int(round(batch_size * text_ratio)) if n_texts else 0
    n_img = max(1, batch_size - n_text)
    # drawn on the CPU with the seeded CPU generator, then moved: the same batches on every device
    device = torch.get_default_device()
    images = torch.randperm(n_images, generator=generator, device="cpu").to(device)
    texts = torch.randperm(max(n_texts, 1), generator=generator, device="cpu").to(device)
    batches, t = [], 0
    for start in range(0, n_images, n_img):
        img_idx = images[start:start + n_img]
        if n_text:
            take = torch.arange(t, t + n_text) % n_texts
            txt_idx, t = texts[take], t + n_text
        else:
            txt_idx = torch.zeros(0, dtype=torch.long)
        batches.append((img_idx, txt_idx))
    return batches


def dassl_lr(epoch: int, base: float, total: int, warmup_lr: float = 1e-5) -> float:
    """Learning rate of epoch `epoch` (from 0) under Dassl's cosine schedule with one constant warm-up epoch
    (the CoOp-family trainers CLAP and TaskRes use): epoch 0 at warmup_lr, then cosine from the base rate,
    the cosine counted from epoch 1."""
    if epoch == 0:
        return warmup_lr
    return base * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / total))


def train_dassl(optimizer: torch.optim.Optimizer, loss_fn: Callable[[torch.Tensor], torch.Tensor], n: int,
                batch_size: int, epochs: int, base_lr: float, generator: torch.Generator) -> None:
    """Epochs of shuffled minibatches of n samples under dassl_lr, no validation (the CoOp-family
    trainers' loop); `loss_fn(indices)` gives a batch's loss."""
    for epoch in range(epochs):
        for group in optimizer.param_groups:
            group["lr"] = dassl_lr(epoch, base_lr, epochs)
        for idx in epoch_batches(n, batch_size, generator):
            loss = loss_fn(idx)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One shuffled pass over n samples in batches of batch_size (the last one may be smaller)."""
    order = torch.randperm(n, generator=generator, device="cpu").to(torch.get_default_device())
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]
