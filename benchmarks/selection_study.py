"""Choices made on 1-2 validation images per class (issue 24, item 3): each method's validation choice
against its fixed default, scored on validation images held out from the draw (and on test, for the record).

    python benchmarks/selection_study.py [--datasets fashion-mnist,imagefolder:DIR] [--shots 1,2,4]

Prints one JSON object: per dataset, variant and shot count the mean held-out validation and test accuracy
over seeds. Variants: taskres with α chosen from (0.5, 1.0) on validation, or fixed at 0.5 or 1.0; lpp with
the epoch chosen on validation, or its last epoch.
"""
from __future__ import annotations

from held_out import held_out, means, run

from crossgate.methods.lpp import LPPConfig
from crossgate.methods.taskres import TaskResConfig
from crossgate.pipeline import fit_one, load_features

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
            held = held_out(len(feats.val.labels), feats.few_shot(k, seed).val)
            for name, (method, config) in VARIANTS.items():
                clf, row = fit_one(feats, method, k, seed, config)
                scores = {"held": 100 * clf.score(feats.val.x[held], feats.val.labels[held]), "test": row["acc_test"]}
                for part, value in scores.items():
                    out.setdefault(name, {}).setdefault(part, {}).setdefault(k, []).append(value)
    return means(out)


if __name__ == "__main__":
    run(study, __doc__, "1,2,4")
