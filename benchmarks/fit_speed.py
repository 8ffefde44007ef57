"""Seconds per fit of every method per (shots, seed) on cached features; JSON lines on stdout.

    python benchmarks/fit_speed.py [--dataset fashion-mnist] [--backbone lite] [--methods all]
    python benchmarks/fit_speed.py --serial        # also Lin's probe search run one setting at a time
    python benchmarks/fit_speed.py --check-patience 30  # do probe choices change with early stopping?

Features come from the cache (extracted first if missing). The first lines time each method; with
--serial, the probe searches are also run setting by setting (12 separate trainings), and a summary line
gives the measured speed-up of the batched search.
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
    args = p.parse_args(argv)
    settings = Settings(progress=False, **({"cache_dir": Path(args.cache_dir)} if args.cache_dir else {}))
    _, _, feats = load_features(settings, args.dataset, args.backbone)
    methods = list_methods() if args.methods == "all" else args.methods.split(",")
    shots_list = [int(s) for s in args.shots.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    totals: dict[str, float] = {}

    def data(shots, seed):  # the draw bench makes (published index files where the dataset has them)
        split = feats.few_shot(shots, seed)
        return (*feats.few_shot_train(split.train), feats.val.x[split.val], feats.val.labels[split.val])

    def emit(row):
        print(json.dumps(row), flush=True)

    for shots in shots_list:
        for seed in seeds:
            x, y, xv, yv = data(shots, seed)
            for method in methods:
                clf = make_method(method, seed)
                start = time.perf_counter()
                clf.fit(x, y, text=feats.text, val=(xv, yv))
                seconds = time.perf_counter() - start
                totals[method] = totals.get(method, 0.0) + seconds
                emit({"method": method, "shots": shots, "seed": seed, "seconds": round(seconds, 4),
                      "mode": "batched" if method in ("linear", "crossmodal") else "default"})
    emit({"summary": "grid", "dataset": args.dataset, "backbone": args.backbone,
          "seconds_per_method": {k: round(v, 2) for k, v in totals.items()},
          "total_seconds": round(sum(totals.values()), 2)})

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


if __name__ == "__main__":
    sys.exit(main())
