"""BenchConfig -> rows in results.jsonl: every method x shots x seed on one dataset and backbone.

Resumable: runs already in the results file are skipped. No printing; progress goes through a callback.
"""
from __future__ import annotations

import inspect
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

from . import __version__
from .cache import DatasetFeatures
from .datasets import few_shot_split
from .errors import UserError
from .methods import METHODS, create_method, list_methods
from .methods.gate import GateConfig
from .results import append_row, read_rows, repair, run_key

DEFAULT_SHOTS = (1, 2, 4, 8, 16)
DEFAULT_SEEDS = (1, 2, 3)


@dataclass
class BenchConfig:
    dataset: str = "fashion-mnist"  # a registered dataset name
    backbone: str = "lite"  # a registered backbone or openclip:<arch>/<pretrained>
    shots: tuple[int, ...] = DEFAULT_SHOTS  # training images per class
    seeds: tuple[int, ...] = DEFAULT_SEEDS  # one few-shot draw (and method seed) each
    methods: tuple[str, ...] = field(default_factory=tuple)  # empty: every registered method
    out: Path = Path("crossgate-demo")  # results.jsonl, summary.md, summary.csv, plots
    gate: GateConfig = field(default_factory=GateConfig)  # for the methods built on the dynamic gate

    def resolved_methods(self) -> list[str]:
        names = list(self.methods) or list_methods()
        unknown = [m for m in names if m not in list_methods()]
        if unknown:
            raise UserError(f"unknown method {unknown[0]!r}; available: {', '.join(list_methods())}")
        return names


def git_commit() -> str | None:
    """The commit crossgate runs from, when it runs from a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _pct(value: float) -> float:
    return round(100.0 * value, 4)


def _jsonable(value):
    if is_dataclass(value):
        return asdict(value)
    return list(value) if isinstance(value, tuple) else value


def make_method(method: str, seed: int, gate: GateConfig | None = None):
    """A fresh estimator; the gate settings go to the methods that take them."""
    params = {"random_state": seed}
    if gate is not None and "gate_config" in inspect.signature(METHODS.factory(method)).parameters:
        params["gate_config"] = gate
    return create_method(method, **params)


def run_one(features: DatasetFeatures, method: str, shots: int, seed: int, gate: GateConfig | None = None) -> dict:
    """Fit one method on one few-shot draw; accuracies in percent."""
    split = few_shot_split(features.train.labels, features.val.labels, shots, seed, features.classnames)
    xtr, ytr = features.train.x[split.train], features.train.labels[split.train]
    xval, yval = features.val.x[split.val], features.val.labels[split.val]
    clf = make_method(method, seed, gate)
    start = time.perf_counter()
    clf.fit(xtr, ytr, text=features.text, val=(xval, yval))
    fit_seconds = time.perf_counter() - start
    extra = {}
    if hasattr(clf, "top1_true_class_rate"):  # how often the gate's first pick is a text of the true class
        extra["gate_top1_true_class"] = _pct(clf.top1_true_class_rate(features.test.x, features.test.labels))
    return {
        **extra,
        "method": method, "shots": shots, "seed": seed,
        "acc_train": _pct(clf.score(xtr, ytr)),
        "acc_val": _pct(clf.score(xval, yval)),
        "acc_test": _pct(clf.score(features.test.x, features.test.labels)),
        "fit_seconds": round(fit_seconds, 4),
        "hparams": {k: v for k, v in clf.chosen_.items()},
        "params": {k: _jsonable(v) for k, v in clf.get_params().items()},
        "n_train": len(ytr), "n_val": len(yval), "n_test": len(features.test.labels),
        "split_source": split.source,
    }


def run_bench(config: BenchConfig, features: DatasetFeatures, backbone_identity: str,
              on_run: Callable[[dict | None, tuple], None] | None = None) -> list[dict]:
    """Run every missing (method, shots, seed) and append it to out/results.jsonl; return all rows."""
    methods = config.resolved_methods()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    repair(path)
    done = {run_key(r) for r in read_rows(path)}
    commit = git_commit()
    for shots in config.shots:
        for seed in config.seeds:
            for method in methods:
                key = (config.dataset, config.backbone, method, shots, seed)
                if key in done:
                    if on_run:
                        on_run(None, key)
                    continue
                row = {"dataset": config.dataset, "backbone": config.backbone,
                       "backbone_identity": backbone_identity,
                       **run_one(features, method, shots, seed, config.gate),
                       "crossgate_version": __version__, "git_commit": commit}
                append_row(path, row)
                if on_run:
                    on_run(row, key)
    wanted = {(config.dataset, config.backbone, m, k, s)
              for m in methods for k in config.shots for s in config.seeds}
    return [r for r in read_rows(path) if run_key(r) in wanted]

