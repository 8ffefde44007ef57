"""Where `crossgate demo`'s time goes, stage by stage, on this machine (issue 23).

Runs the demo's work in this process on one core, as each fit worker does: the imports, reading the cached
features (and the corrupted subsets), then per few-shot draw each method's fit, the rest of fit_one
(scoring train / val / test, the gate's selection statistics) and the scoring on the corrupted data, then
the reports. The features must be cached (run `crossgate demo` or `crossgate extract` once).

    python benchmarks/demo_stages.py [--seeds 1,2,3] [--shots 1,4,16]   (the demo's own by default)

Prints one JSON object: seconds per stage, per method (summed over the draws), and in all.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

START = time.perf_counter()
import torch  # noqa: E402

from crossgate.allocator import keep_freed_memory  # noqa: E402
from crossgate.bench import corruption_rows  # noqa: E402
from crossgate.cli import DEMO_CORRUPT_PER_CLASS, DEMO_SHOTS, bench_method_configs, build_parser  # noqa: E402
from crossgate.corruptions import parse_specs  # noqa: E402
from crossgate.methods import METHODS  # noqa: E402
from crossgate.pipeline import fit_scored, load_features  # noqa: E402
from crossgate.report import write_reports  # noqa: E402
from crossgate.results import append_row  # noqa: E402

IMPORTED = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--shots", default=",".join(map(str, DEMO_SHOTS)))
    args = parser.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()  # as each fit worker does
    corruptions = parse_specs("all:3")
    t0 = time.perf_counter()
    _, _, features = load_features("fashion-mnist", "lite", corrupt=corruptions,
                                   corrupt_per_class=DEMO_CORRUPT_PER_CLASS)
    loaded = time.perf_counter() - t0
    configs = bench_method_configs(build_parser("demo").parse_args(["demo"]))  # the demo's own, as it runs them
    per = defaultdict(lambda: defaultdict(float))
    rows = []
    for shots in map(int, args.shots.split(",")):
        for seed in map(int, args.seeds.split(",")):
            fitted = {}
            for method in METHODS.names():
                t = time.perf_counter()
                clf, row, test = fit_scored(features, method, shots, seed, configs.get(method), "cpu", fitted)
                whole = time.perf_counter() - t
                fitted[method] = clf
                per[method]["fit"] += row["fit_seconds"]
                per[method]["score_and_stats"] += whole - row["fit_seconds"]
                t = time.perf_counter()
                rows += [row] + corruption_rows(clf, features, row, corruptions, test)
                per[method]["corruptions"] += time.perf_counter() - t
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        for row in rows:
            append_row(Path(out) / "results.jsonl",
                       {"dataset": "fashion-mnist", "backbone": "lite", **row})
        write_reports(Path(out))
    reports = time.perf_counter() - t
    stages = {stage: round(sum(p[stage] for p in per.values()), 2)
              for stage in ("fit", "score_and_stats", "corruptions")}
    print(json.dumps({
        "seeds": args.seeds, "shots": args.shots, "threads": 1,
        "import_s": round(IMPORTED - START, 2), "load_features_s": round(loaded, 2), "reports_s": round(reports, 2),
        "stages_s": stages, "total_s": round(time.perf_counter() - START, 2),
        "per_method_s": {m: {k: round(v, 2) for k, v in p.items()} for m, p in
                         sorted(per.items(), key=lambda kv: -sum(kv[1].values()))},
    }, indent=1))


if __name__ == "__main__":
    main()
