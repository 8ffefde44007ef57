"""Seconds per fit of every method per (shots, seed) on cached features; JSON lines on stdout.

    python benchmarks/fit_speed.py [--dataset fashion-mnist] [--backbone lite] [--methods all]
    python benchmarks/fit_speed.py --serial        # also Lin's probe search run one setting at a time
    python benchmarks/fit_speed.py --check-patience 30  # do probe choices change with early stopping?
    python benchmarks/fit_speed.py --device cuda --compare-cpu  # GPU seconds, CPU seconds, and agreement
    python benchmarks/fit_speed.py --device cuda --imagenet-sized  # Lin's 12-setting search at ImageNet size

Features come from the cache (extracted first if missing). The first lines time each method on --device;
with --compare-cpu (and a --device other than cpu) every fit is repeated on the CPU, and each line also
gives the CPU seconds and whether both chose the same hyperparameters and how far their test accuracies
are apart. With --serial, the probe searches are also run setting by setting (12 separate trainings), and
a summary line gives the measured speed-up of the batched search. --imagenet-sized times Lin et al.'s full
search (lr x weight decay x batch size, 12,800 updates each, validation every 100) on random unit features
of ImageNet's size: 1,000 classes, 16 shots, 1,024-d, 4 validation images per class, cross-modal (one
text per class); Lin et al. report 15 s per setting on an RTX 3090. --imagenet-iterations shortens it
(the line then says so and gives seconds per update).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    from crossgate.methods import list_methods
    from crossgate.methods.probe import ProbeSearch, search_probe
    from crossgate.pipeline import load_features, make_method
    from crossgate.settings import Settings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--backbone", default="lite")
    p.add_argument("--shots", default="1,2,4,8,16")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--methods", default="all")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--serial", action="store_true", help="also time the probe search one setting at a time")
    p.add_argument("--check-patience", type=int, default=None, metavar="P",
                   help="compare probe choices with early stopping after P validations against full training")
    p.add_argument("--device", default="cpu", help="where the methods fit (cpu, cuda)")
    p.add_argument("--compare-cpu", action="store_true", help="also fit on the CPU; report both and agreement")
    p.add_argument("--imagenet-sized", action="store_true", help="time the probe search at ImageNet size")
    p.add_argument("--imagenet-iterations", type=int, default=12_800)
    p.add_argument("--skip-grid", action="store_true", help="only the --imagenet-sized search")
    p.add_argument("--export-features", type=Path, default=None, metavar="STEM",
                   help="write the dataset's cached features to STEM.safetensors/.json and stop (to time fits "
                        "on a machine without the backbone's weights)")
    p.add_argument("--features", type=Path, default=None, metavar="STEM", help="fit on exported features")
    args = p.parse_args(argv)
    settings = Settings(progress=False, device=args.device,
                        **({"cache_dir": Path(args.cache_dir)} if args.cache_dir else {}))
    device = settings.torch_device()
    if args.imagenet_sized:
        imagenet_sized(device, args.imagenet_iterations)
    if args.skip_grid:
        return 0
    feats = (imported(args.features) if args.features
             else load_features(args.dataset, args.backbone, settings)[2])
    if args.export_features:
        export(feats, args.export_features, args.dataset, args.backbone)
        return 0
    methods = list_methods() if args.methods == "all" else args.methods.split(",")
    shots_list = [int(s) for s in args.shots.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    totals: dict[str, float] = {}

    def data(shots, seed):  # the draw bench makes (published index files where the dataset has them)
        split = feats.few_shot(shots, seed)
        return (*feats.few_shot_train(split.train), feats.val.x[split.val], feats.val.labels[split.val])

    def emit(row):
        print(json.dumps(row), flush=True)

    compare = args.compare_cpu  # on the CPU itself: a check that fits are deterministic
    cpu_totals: dict[str, float] = {}
    gaps: dict[str, float] = {}

    def timed_fit(method, seed, on, x, y, xv, yv):
        clf = make_method(method, seed, device=on)
        start = time.perf_counter()
        clf.fit(x, y, text=feats.text, val=(xv, yv))
        return clf, time.perf_counter() - start

    for shots in shots_list:
        for seed in seeds:
            x, y, xv, yv = data(shots, seed)
            for method in methods:
                try:
                    clf, seconds = timed_fit(method, seed, device, x, y, xv, yv)
                except Exception:  # noqa: BLE001  (a failing method is reported; the others still run)
                    import traceback

                    emit({"method": method, "shots": shots, "seed": seed, "device": device,
                          "error": traceback.format_exc()[-1500:]})
                    continue
                totals[method] = totals.get(method, 0.0) + seconds
                row = {"method": method, "shots": shots, "seed": seed, "device": device, "seconds": round(seconds, 4),
                       "mode": "batched" if method in ("linear", "crossmodal") else "default"}
                if compare:
                    ref, cpu_seconds = timed_fit(method, seed, "cpu", x, y, xv, yv)
                    cpu_totals[method] = cpu_totals.get(method, 0.0) + cpu_seconds
                    acc, acc_cpu = (100 * c.score(feats.test.x, feats.test.labels) for c in (clf, ref))
                    gaps[method] = max(gaps.get(method, 0.0), abs(acc - acc_cpu))
                    row.update(cpu_seconds=round(cpu_seconds, 4), acc_test=round(acc, 2),
                               acc_test_cpu=round(acc_cpu, 2), same_choice=same_choice(clf.chosen_, ref.chosen_),
                               max_abs_logit_diff=float(np.abs(clf._logits(feats.test.x)
                                                               - ref._logits(feats.test.x)).max()))
                emit(row)
    summary = {"summary": "grid", "dataset": args.dataset, "backbone": args.backbone, "device": device,
               "seconds_per_method": {k: round(v, 2) for k, v in totals.items()},
               "total_seconds": round(sum(totals.values()), 2)}
    if compare:
        summary.update(cpu_seconds_per_method={k: round(v, 2) for k, v in cpu_totals.items()},
                       cpu_total_seconds=round(sum(cpu_totals.values()), 2),
                       max_test_accuracy_gap_points={k: round(v, 2) for k, v in gaps.items()})
    emit(summary)

    probes = [m for m in ("linear", "crossmodal") if m in methods]

    def probe_problems():
        """(method, shots, seed, search_probe's data arguments) for every probe fit of the grid."""
        for shots in shots_list:
            for seed in seeds:
                x, y, xv, yv = data(shots, seed)
                for method in probes:
                    clf = make_method(method, seed)
                    clf._check_fit(x, y, feats.text, (xv, yv))
                    tx, ty = (feats.text.x, feats.text.labels) if clf.cross_modal else (None, None)
                    yield method, shots, seed, (x, y, tx, ty, xv, yv, clf._init(feats.text, x.shape[1], seed))

    if args.serial and probes:
        serial_total, batched_total = 0.0, sum(totals[m] for m in probes)
        search = ProbeSearch()
        for method, shots, seed, problem in probe_problems():
            start = time.perf_counter()
            results = [search_probe(*problem, search, seed, settings=[s], threads=1) for s in search.settings()]
            max(results, key=lambda r: r.val_acc)
            seconds = time.perf_counter() - start
            serial_total += seconds
            emit({"method": method, "shots": shots, "seed": seed, "seconds": round(seconds, 4),
                  "mode": "one-setting-at-a-time"})
        emit({"summary": "probe-search", "batched_seconds": round(batched_total, 2),
              "one_setting_at_a_time_seconds": round(serial_total, 2),
              "speedup": round(serial_total / batched_total, 2)})

    if args.check_patience is not None and probes:
        same = True
        for method, shots, seed, problem in probe_problems():
            early = search_probe(*problem, replace(ProbeSearch(), patience=args.check_patience), seed)
            full = search_probe(*problem, replace(ProbeSearch(), patience=None), seed)
            equal = (early.setting, early.step) == (full.setting, full.step) and np.array_equal(
                early.weights, full.weights)
            same &= equal
            emit({"check": "patience", "method": method, "shots": shots, "seed": seed,
                  "early": [*early.setting, early.step, early.steps_run],
                  "full": [*full.setting, full.step, full.steps_run], "same_choice": equal})
        emit({"summary": "patience", "patience": args.check_patience, "same_choice_everywhere": same})
    return 0


def same_choice(a, b) -> bool:
    """Equal hyperparameter choices; searched real values (LP++'s step sizes) equal to 1e-5 relative."""
    import math

    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_choice(a[k], b[k]) for k in a)
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-5)
    return a == b


def export(feats, stem: Path, dataset: str, backbone: str) -> None:
    from crossgate.storage import save_arrays

    arrays = {f"{s}.{k}": getattr(getattr(feats, s), k) for s in ("train", "val", "test") for k in ("x", "labels")}
    arrays.update({"text.x": feats.text.x, "text.native": feats.text.native, "text.labels": feats.text.labels})
    save_arrays(stem, arrays, {"kind": "exported-features", "dataset": dataset, "backbone": backbone,
                               "classnames": feats.classnames, "texts": feats.text.texts})


def imported(stem: Path):
    """DatasetFeatures from an export (no index files: crossgate's sampler draws the shots)."""
    from crossgate.cache import DatasetFeatures
    from crossgate.features import ImageFeatures, TextFeatures
    from crossgate.storage import load_arrays

    hit = load_arrays(stem)
    if hit is None:
        raise SystemExit(f"--features {stem}: no valid export there")
    a, meta = hit
    splits = {s: ImageFeatures(x=a[f"{s}.x"], labels=a[f"{s}.labels"]) for s in ("train", "val", "test")}
    return DatasetFeatures(**splits,
                           text=TextFeatures(x=a["text.x"], native=a["text.native"], labels=a["text.labels"],
                                             texts=meta["texts"]), classnames=meta["classnames"])


def imagenet_sized(device: str, iterations: int) -> None:
    """Lin et al.'s cross-modal search on random unit features of ImageNet's size; one JSON line."""
    import torch

    from crossgate.features import unit_rows
    from crossgate.methods.probe import ProbeSearch, search_probe

    classes, shots, dim, val_shots = 1000, 16, 1024, 4
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)

    def sample(n):  # n images per class around the class centres
        y = np.repeat(np.arange(classes), n)
        return unit_rows(centres[y] + 6.0 * rng.normal(size=(len(y), dim)).astype(np.float32)), y

    x, y = sample(shots)
    xv, yv = sample(val_shots)
    text, text_y = unit_rows(centres + 4.0 * rng.normal(size=centres.shape).astype(np.float32)), np.arange(classes)
    search = ProbeSearch(iterations=iterations)
    if device.startswith("cuda"):
        search_probe(x, y, text, text_y, xv, yv, text, ProbeSearch(iterations=200), 0, device=device)  # warm-up
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = search_probe(x, y, text, text_y, xv, yv, text, search, 0, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    updates = len(search.settings()) * iterations
    print(json.dumps({"summary": "imagenet-sized-search", "device": device, "classes": classes, "shots": shots,
                      "dim": dim, "settings": len(search.settings()), "iterations": iterations,
                      "full_protocol": iterations == 12_800, "seconds": round(seconds, 2),
                      "ms_per_setting_update": round(1000 * seconds / updates, 4),
                      "lin_et_al_rtx3090_seconds_per_setting": 15, "val_acc": round(result.val_acc, 4),
                      "chosen": list(result.setting), "step": result.step}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
