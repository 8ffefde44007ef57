"""BenchConfig -> rows in results.jsonl: every method x shots x seed on one dataset and backbone.

Resumable: runs already in the results file are skipped. No printing; progress goes through a callback.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .allocator import keep_freed_memory
from .cache import DatasetFeatures
from .errors import UserError
from .lifeline import end_with_parent
from .methods import FewShotClassifier, list_methods
from .pipeline import Scored, fit_base_to_new, fit_scored, pct, score_images
from .results import append_row, read_rows, repair, run_key
from .settings import DEFAULT_SEEDS, DEFAULT_SHOTS
from .storage import ensure_writable_dir, lock_file

CORRUPTED_ONLY = ("corrupt_per_class",)  # settings that move only the corrupted rows' numbers
# what rows written before these fields existed meant
SETUP_DEFAULTS = {"train_views": ["center"], "templates": None, "corrupt_seed": 0, "corrupt_per_class": None,
                  "skipped_images": {}, "prompts": None, "aug_views": 0, "protocol": "few-shot"}


@dataclass
class BenchConfig:
    dataset: str = "fashion-mnist"  # a registered dataset name
    backbone: str = "lite"  # a registered backbone or openclip:<arch>/<pretrained>
    shots: tuple[int, ...] = DEFAULT_SHOTS  # training images per class
    seeds: tuple[int, ...] = DEFAULT_SEEDS  # one few-shot draw (and method seed) each
    methods: tuple[str, ...] = field(default_factory=tuple)  # empty: every registered method
    out: Path = Path("crossgate-demo")  # results.jsonl, summary.md, summary.csv, plots
    configs: dict = field(default_factory=dict)  # method name -> its config dataclass; absent: its defaults
    jobs: int = 1  # worker processes; each fits whole (shots, seed) draws single-threaded
    setup: dict = field(default_factory=dict)  # what else shapes the rows (views, templates); must match to resume
    corruptions: tuple = ()  # Corruption(name, severity): fitted heads also scored on corrupted test data
    shifts: tuple[str, ...] = ()  # shift sets (imagenet_v2, ...): fitted heads also scored on their test images
    device: str = "cpu"  # where the methods fit ("cuda": every estimator trains on the GPU)
    select_on: str = "few-shot-val"  # where fits choose: few-shot-val (ours), full-val or test (results.SELECT_ON)
    protocol: str = "few-shot"  # or "base2new": fit on the base classes, score base and new (pipeline.fit_base_to_new)

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


# what a corruption or shift-set row takes over from the clean row of the same fit
CARRIED = ("method", "shots", "seed", "n_train", "n_val", "split_source", "train_views", "hparams", "select_on",
           "aug_views_used")


def corruption_rows(clf: FewShotClassifier, features: DatasetFeatures, clean: dict, corruptions,
                    clean_test: Scored | None = None) -> list[dict]:
    """One row per corruption: the fitted head scored on corrupted test images, or consulting corrupted
    prompts; for gate methods also how often the top-1 selected text moved and how often it is of the
    true class. `clean_test`: the clean test images already scored (fit_scored), so they are not again."""
    if not corruptions:
        return []
    test = features.test
    clean_test = score_images(clf, test.x) if clean_test is None else clean_test
    if features.corrupted_rows is not None:  # corrupted copies of a class-balanced subset: compare on it
        test = type(test)(x=test.x[features.corrupted_rows], labels=test.labels[features.corrupted_rows])
        clean_test = clean_test.subset(features.corrupted_rows)
    acc_clean = pct(clean_test.accuracy(test.labels))
    # the image corruptions share one head: their copies are scored in one pass (a call per corruption
    # spent more time on per-call overhead than on the heads)
    images = [c for c in corruptions if c.kind == "image"]
    starts = np.cumsum([0] + [len(features.corrupted[c].x) for c in images])
    scored_all = score_images(clf, np.concatenate([features.corrupted[c].x for c in images])) if images else None
    rows = []
    for c in corruptions:
        if c.kind == "image":
            at = images.index(c)
            scored, head = scored_all.subset(slice(starts[at], starts[at + 1])), clf
        else:  # corrupted prompts: the head consults other texts
            head = clf.with_text(features.corrupted[c])
            scored = score_images(head, test.x)
        row = {k: clean[k] for k in CARRIED}
        row.update(corruption=c.name, severity=c.severity, acc_test=pct(scored.accuracy(test.labels)),
                   acc_clean=acc_clean, n_test=len(test.labels))
        if scored.indices is not None:
            top1 = scored.indices[:, 0]
            row["gate_top1_shift"] = pct(float(np.mean(top1 != clean_test.indices[:, 0])))
            row["gate_top1_true_class"] = pct(float(np.mean(head.text_labels_[top1] == test.labels)))
        rows.append(row)
    return rows


def run_draw(features: DatasetFeatures, methods: list[tuple[str, object]], shots: int, seed: int,
             corruptions: tuple = (), device: str = "cpu", select_on: str = "few-shot-val",
             protocol: str = "few-shot") -> list[list[dict]]:
    """Every (method, config) on one few-shot draw, in order: per method its clean row, then one row per
    corruption. The draw's fits are offered to the methods built on others (gate-joint's bases)."""
    fitted, out = {}, []
    for method, config in methods:
        if protocol == "base2new":  # one row per fit: base, new and their harmonic mean
            out.append([fit_base_to_new(features, method, shots, seed, config, device, select_on)[1]])
            continue
        clf, row, test = fit_scored(features, method, shots, seed, config, device, fitted, select_on)
        fitted[method] = clf
        out.append([row] + corruption_rows(clf, features, row, corruptions, test) + shift_rows(clf, features, row))
    return out


def shift_rows(clf: FewShotClassifier, features: DatasetFeatures, clean: dict) -> list[dict]:
    """One row per shift set: the fitted head scored on its test images, its logits restricted to the classes
    the set holds (200 of ImageNet's 1,000 for -A and -R, as Lin et al. and CoOp score them)."""
    rows = []
    for name, (images, classes) in features.shifted.items():
        proba = clf.predict_proba(images.x)[:, classes]
        pred = np.asarray(classes)[proba.argmax(1)]
        row = {k: clean[k] for k in CARRIED}
        row.update(eval_set=name, acc_test=pct(float(np.mean(pred == images.labels))), n_test=len(images.labels),
                   n_classes=len(classes))
        rows.append(row)
    return rows


_WORKER_FEATURES: DatasetFeatures | None = None


def _worker_init(features: DatasetFeatures) -> None:
    global _WORKER_FEATURES
    import torch

    torch.set_num_threads(1)  # one core per worker; the workers share the machine
    keep_freed_memory()
    # Ctrl-C is the main process's to handle (it ends the pool and says one line); a worker's traceback
    # per process would bury that line
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    end_with_parent()
    _WORKER_FEATURES = features


def _worker_run(job: tuple) -> list[list[dict]]:
    return run_draw(_WORKER_FEATURES, *job)


OUR_FILES = ("results.jsonl", LOCK_NAME := "results.jsonl.lock", ".crossgate-written.json")


def _written_by_crossgate(results: Path) -> bool:
    """An empty results file, or one holding at least one row crossgate could have written (a malformed line
    among crossgate's rows is skipped with a warning; a file of none is somebody else's)."""
    from .jsonio import BadJSON, parse_json
    from .results import valid_row

    seen_text = False
    with open(results, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            seen_text = True
            try:
                if valid_row(parse_json(line)):
                    return True
            except BadJSON:
                continue
    return not seen_text


def check_out_folder(out: Path) -> Path:
    """Before any work: the results folder is new, empty, or one crossgate writes (results.jsonl a regular
    file; every report file there written by crossgate and unchanged), and writable. Returns it, made."""
    from .report import report_files
    from .storage import OutputFolder

    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; results go in a folder: choose another --out")
    results = out / "results.jsonl"
    if results.is_symlink() or (results.exists() and not results.is_file()):
        kind = "a link" if results.is_symlink() else "a folder" if results.is_dir() else "not a regular file"
        raise UserError(f"{results} is {kind}, not the results file crossgate appends to; move it away or choose "
                        "another --out")
    if results.is_file() and not _written_by_crossgate(results):
        raise UserError(f"{results} holds no results row crossgate writes; crossgate appends to it and "
                        "drops a half-written last line, so it is refused: move it away or choose another --out")
    if out.is_dir() and not results.exists():
        foreign = [p.name for p in out.iterdir() if p.name not in OUR_FILES + tuple(report_files(out))]
        if foreign:
            raise UserError(f"--out {out} holds files ({', '.join(sorted(foreign)[:3])}{', ...' * (len(foreign) > 3)})"
                            " and no results.jsonl; crossgate would write summary.md, summary.csv and plots there: "
                            "choose a new or empty folder")
    OutputFolder(out).check(report_files(out))
    return ensure_writable_dir(out, "output folder", "--out")


def _variants(config: BenchConfig) -> list[tuple]:
    """(corruption, severity, eval_set, select_on) of every row one fit gives: clean, each corruption, each
    shift set."""
    rows = ([(None, None, None)] + [(c.name, c.severity, None) for c in config.corruptions]
            + [(None, None, name) for name in config.shifts])
    return [(*v, config.select_on) for v in rows]


def pending_runs(config: BenchConfig, existing: list[dict] | None = None) -> list[tuple]:
    """The (method, shots, seed) runs of the grid that results.jsonl in config.out does not hold yet (a run
    counts as done when its clean row and every corruption row are there)."""
    if existing is None:
        existing = read_rows(Path(config.out).expanduser() / "results.jsonl")
    done = {run_key(r) for r in existing}
    variants = _variants(config)
    return [(m, k, s) for k in config.shots for s in config.seeds for m in config.resolved_methods()
            if not {(config.dataset, config.backbone, m, k, s, *v) for v in variants} <= done]


# rough seconds per fit on one core of a laptop CPU (README, Speed: 1 to 16 shots on lite's 1280-d features),
# for the estimate bench prints before it starts; Lin et al.'s searches scale with their updates
FIT_SECONDS = {"gate-joint": 2.5, "gate": 1.2, "taskres": 0.5, "tipf": 0.3, "clap": 0.4, "lpp": 0.3}
PROBE_SECONDS_PER_UPDATE = 9.0 / 12_800
SCORE_SECONDS_PER_VIEW = 0.012  # scoring one fitted head on the test set or one corrupted copy of it


def worker_context():
    """Where fit workers come from: forked from a fork server that imported crossgate and nothing else, so a
    worker starts in milliseconds and no thread of this process (OpenMP's, a tokenizer's) is forked with it,
    which can deadlock a child; spawn where there is no fork server (Windows)."""
    import multiprocessing as mp

    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    from multiprocessing import forkserver

    forkserver.set_forkserver_preload(["crossgate.fork_server", "crossgate.bench"])  # in this order
    return mp.get_context("forkserver")


def start_fit_workers_early(config: BenchConfig, runs: list[tuple]) -> None:
    """Start the fork server now, when `runs` will need worker processes: it imports torch, scikit-learn and
    crossgate (5-8 s of one core) while this process loads the features, instead of each worker doing it
    after them."""
    if fit_processes(config, runs) > 1 and worker_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def fit_processes(config: BenchConfig, runs: list[tuple]) -> int:
    """Worker processes fitting `runs`: no more than draws or cores (each imports torch; more would only wait)."""
    return max(1, min(config.jobs, len({(k, s) for _, k, s in runs}), os.cpu_count() or 1))


def fit_seconds_estimate(config: BenchConfig, runs: list[tuple], measured: dict | None = None) -> float:
    """About how long `runs` take to fit and score, spread over the worker processes: from this machine's
    measured seconds per (method, shots) and overhead (timings.py) where it has them, else from rough
    per-method constants."""
    measured = measured or {}
    fits, overhead = measured.get("fit", {}), measured.get("overhead")
    total = 0.0 if overhead else SCORE_SECONDS_PER_VIEW * (1 + len(config.corruptions)) * len(runs)
    for method, shots, _ in runs:
        search = config.configs.get(method)
        if f"{method}/{shots}" in fits:
            total += fits[f"{method}/{shots}"]
        elif method in ("linear", "crossmodal"):
            total += PROBE_SECONDS_PER_UPDATE * (getattr(search, "iterations", None) or 12_800)
        else:
            total += FIT_SECONDS.get(method, 0.1)
    processes = fit_processes(config, runs)
    if overhead:  # measured: scoring, worker start-up and idle cores included
        return total * overhead / processes
    # processes share memory bandwidth (about 15% slower each on two cores), and each imports torch first
    return total / processes * (1.15 if processes > 1 else 1.0) + (3.0 if processes > 1 else 0.0)


def run_bench(config: BenchConfig, features: DatasetFeatures, backbone_identity: str,
              on_run: Callable[[dict | None, tuple], None] | None = None,
              dataset_identity: str | None = None) -> list[dict]:
    """Run every missing (method, shots, seed) and append it to out/results.jsonl; return all rows.

    Rows are appended in grid order as they finish, so results.jsonl is the same for any --jobs. One run
    at a time writes to a folder (a second one is refused rather than duplicating rows).
    """
    from filelock import Timeout

    methods = config.resolved_methods()
    out = check_out_folder(config.out)
    lock = lock_file(out / LOCK_NAME)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError(f"another crossgate run is writing to {out}; wait for it to finish or choose another "
                        "--out") from None
    except OSError as err:
        raise UserError(f"cannot lock {out / LOCK_NAME} ({err.strerror or err}); remove it and run again") from None
    try:
        return _run_locked(config, features, backbone_identity, dataset_identity, methods, out, on_run)
    finally:
        # removed while still held, after the last write: a run that opens it now finds it locked, one that
        # comes after makes a new one (no run waits on a lock, so none can hold the removed file's)
        (out / LOCK_NAME).unlink(missing_ok=True)
        lock.release()


def _check_comparable(path: Path, existing: list[dict], config: BenchConfig, methods: list[str],
                      backbone_identity: str, dataset_identity: str | None) -> None:
    """Rows already in the folder must come from the same setup as this run, or resuming would mix
    numbers of other settings into one table: any setting that changes a number is compared."""
    from .methods import METHODS
    from .model import jsonable

    wanted = {m: json.loads(json.dumps(jsonable(config.configs.get(m) or METHODS.factory(m).config_class())))
              for m in methods if METHODS.factory(m).config_class is not None}  # as a row holds it
    for row in existing:
        if row.get("dataset") != config.dataset or row.get("backbone") != config.backbone:
            continue
        what = None
        differs = [k for k, v in config.setup.items() if row.get(k, SETUP_DEFAULTS.get(k)) != v
                   and not (k in CORRUPTED_ONLY and (row.get("corruption") is None or not config.corruptions))]
        if differs:
            what = (differs[0], row.get(differs[0], SETUP_DEFAULTS.get(differs[0])), config.setup[differs[0]])
        elif backbone_identity and row.get("backbone_identity", backbone_identity) != backbone_identity:
            what = ("backbone identity (weights, device, precision or decode)", row["backbone_identity"],
                    backbone_identity)
        elif dataset_identity and row.get("dataset_identity", dataset_identity) != dataset_identity:
            what = ("dataset content", row["dataset_identity"], dataset_identity)
        elif row.get("method") in wanted and (row.get("params") or {}).get("config") not in (
                None, wanted[row["method"]]):
            what = (f"{row['method']} settings", row["params"]["config"], wanted[row["method"]])
        elif (row.get("params") or {}).get("device", "cpu") != config.device and row.get("method") in methods:
            what = ("fit device", row["params"]["device"], config.device)
        if what:
            raise UserError(f"{path} holds {config.dataset} runs with {what[0]} = {what[1]!r}, not {what[2]!r}; "
                            "they would not be comparable: choose another --out")


def check_before_work(config: BenchConfig, rows: list[dict]) -> str:
    """Refuse, before anything is encoded or fitted, a run whose settings differ from the `rows` already in
    its folder (what needs the features, the backbone and dataset identities, is checked again later).
    Returns a note for the plan's first line when the folder's tables will compare other seed sets."""
    existing = [r for r in rows if r.get("dataset") == config.dataset and r.get("backbone") == config.backbone]
    methods = config.resolved_methods()
    _check_comparable(Path(config.out).expanduser() / "results.jsonl", existing, config, methods, "", None)
    seeds_of: dict = {}
    for r in existing:
        seeds_of.setdefault(r["method"], set()).add(r["seed"])
    for m in methods:
        seeds_of.setdefault(m, set()).update(config.seeds)
    distinct = {tuple(sorted(v)) for v in seeds_of.values()}
    if len(distinct) < 2:
        return ""
    return ("; the folder's tables will compare methods over different seeds (" + "; ".join(
        f"{', '.join(m for m, v in seeds_of.items() if tuple(sorted(v)) == d)}: seeds {','.join(map(str, d))}"
        for d in sorted(distinct)) + "); a cell of fewer seeds says how many")


def _run_locked(config, features, backbone_identity, dataset_identity, methods, out, on_run) -> list[dict]:
    path = out / "results.jsonl"
    repair(path)
    existing = read_rows(path)
    _check_comparable(path, existing, config, methods, backbone_identity, dataset_identity)
    done = {run_key(r) for r in existing}
    commit = git_commit()
    grid = [(m, k, s) for k in config.shots for s in config.seeds for m in methods]
    variants = _variants(config)

    def keys(m, k, s):  # the rows one fit produces: clean, then one per corruption and per shift set
        return [(config.dataset, config.backbone, m, k, s, *v) for v in variants]

    todo = pending_runs(config, existing)
    if on_run:
        for m, k, s in grid:
            if (m, k, s) not in todo:
                on_run(None, (config.dataset, config.backbone, m, k, s))

    def record(job, results, notify=True):
        for result in results:
            row = {"dataset": config.dataset, "backbone": config.backbone, "backbone_identity": backbone_identity,
                   **({"dataset_identity": dataset_identity} if dataset_identity else {}), **result,
                   **config.setup, "crossgate_version": __version__, "git_commit": commit}
            if run_key(row) not in done:  # a corruption added to a finished run: only the new rows
                append_row(path, row)
        if on_run and notify:
            on_run(results[0], (config.dataset, config.backbone, *job))

    # one job per few-shot draw: its methods fit in order in one process, so later ones can reuse earlier fits
    draws = list(dict.fromkeys((k, s) for _, k, s in todo))
    jobs = [([(m, config.configs.get(m)) for m, k2, s2 in todo if (k2, s2) == (k, s)], k, s, config.corruptions,
             config.device, config.select_on, config.protocol) for k, s in draws]

    def record_draw(job, results, notify=True):
        for (m, _), result in zip(job[0], results, strict=True):
            record((m, job[1], job[2]), result, notify)

    def notify_draw(job, results):  # progress as draws finish, whatever order they are written in
        if on_run:
            for (m, _), result in zip(job[0], results, strict=True):
                on_run(result[0], (config.dataset, config.backbone, m, job[1], job[2]))

    if config.jobs > 1 and len(jobs) > 1:
        ctx = worker_context()
        # the costliest draws (most shots) start first, so no worker idles at the end on one long draw;
        # rows are still written in grid order, each as soon as every draw before it is done
        order = sorted(range(len(jobs)), key=lambda i: -jobs[i][1])
        finished, written = {}, 0
        with ctx.Pool(fit_processes(config, todo), initializer=_worker_init, initargs=(features,)) as pool:
            for i, results in zip(order, pool.imap(_worker_run, [jobs[i] for i in order]), strict=True):
                finished[i] = results
                notify_draw(jobs[i], results)
                while written in finished:
                    record_draw(jobs[written], finished.pop(written), notify=False)
                    written += 1
    else:
        import torch

        # one core, as in the workers: float results then do not depend on --jobs
        keep_freed_memory()
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for job in jobs:
                record_draw(job, run_draw(features, *job))
        finally:
            torch.set_num_threads(previous)
    wanted = {key for m, k, s in grid for key in keys(m, k, s)}
    return [r for r in read_rows(path) if run_key(r) in wanted]
