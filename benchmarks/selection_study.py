"""Choices made on 1-2 validation images per class (issue 24, item 3): each method's validation choice
against its fixed default, scored on validation images held out from the draw (and on test, for the record).

    python benchmarks/selection_study.py [--datasets fashion-mnist,imagefolder:DIR] [--shots 1,2,4]

Prints one JSON object: per dataset, variant and shot count the mean held-out validation and test accuracy
over seeds. Variants: taskres with α chosen from (0.5, 1.0) on validation, or fixed at 0.5 or 1.0; lpp with
the epoch chosen on validation, or its last epoch.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from crossgate.methods.lpp import LPPConfig
from crossgate.methods.taskres import TaskResConfig
from crossgate.pipeline import fit_one, load_features

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cifar-dogs-cats"
VARIANTS = {"taskres (α on val)": ("taskres", TaskResConfig()),
            "taskres α=0.5": ("taskres", TaskResConfig(alphas=(0.5,))),
            "taskres α=1.0": ("taskres", TaskResConfig(alphas=(1.0,))),
            "lpp (epoch on val)": ("lpp", LPPConfig()),
            "lpp last epoch": ("lpp", LPPConfig(select_epoch=False))}


def study(dataset: str, shots: list[int], seeds: list[int]) -> dict:
    _, _, feats = load_features(dataset, "lite")
    out: dict = {}
    for k in shots:
        for seed in seeds:
            held = np.setdiff1d(np.arange(len(feats.val.labels)), feats.few_shot(k, seed).val)
            for name, (method, config) in VARIANTS.items():
                clf, row = fit_one(feats, method, k, seed, config)
                scores = {"held": 100 * clf.score(feats.val.x[held], feats.val.labels[held]), "test": row["acc_test"]}
                for part, value in scores.items():
                    out.setdefault(name, {}).setdefault(part, {}).setdefault(k, []).append(value)
    return {name: {part: {k: round(float(np.mean(v)), 2) for k, v in per.items()} for part, per in parts.items()}
            for name, parts in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=f"fashion-mnist,imagefolder:{CIFAR}")
    parser.add_argument("--shots", default="1,2,4")
    parser.add_argument("--seeds", default="1,2,3")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shots, seeds = [int(s) for s in args.shots.split(",")], [int(s) for s in args.seeds.split(",")]
    print(json.dumps({d: study(d, shots, seeds) for d in args.datasets.split(",")}, indent=1))


if __name__ == "__main__":
    main()
