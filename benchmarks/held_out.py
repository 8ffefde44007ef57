"""What the held-out validation studies (base_selection_study.py, selection_study.py) share: the validation
images a few-shot draw leaves out, and one command line over datasets, shots and seeds printing JSON."""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cifar-dogs-cats"


def held_out(n_val: int, drawn: np.ndarray) -> np.ndarray:
    """Validation rows no fit and no choice sees: the split's rows outside the few-shot validation draw."""
    return np.setdiff1d(np.arange(n_val), drawn)


def held_out_images(feats, split, cap: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Every image of the training and validation splits outside the few-shot draw (training rows: a fixed
    sample of at most `cap`), with labels: a held-out set larger than the validation split alone."""
    train = held_out(len(feats.train.labels), split.train)
    if len(train) > cap:
        train = np.sort(np.random.default_rng(0).choice(train, cap, replace=False))
    val = held_out(len(feats.val.labels), split.val)
    return (np.concatenate([feats.train.x[train], feats.val.x[val]]),
            np.concatenate([feats.train.labels[train], feats.val.labels[val]]))


def means(values: dict) -> dict:
    """{name: {part: {shots: [per seed]}}} -> the same with each list replaced by its mean."""
    return {name: {part: {k: round(float(np.mean(v)), 2) for k, v in per.items()} for part, per in parts.items()}
            for name, parts in values.items()}


def run(study: Callable[[str, list[int], list[int]], dict], doc: str, shots: str) -> None:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--datasets", default=f"fashion-mnist,imagefolder:{CIFAR}")
    parser.add_argument("--shots", default=shots)
    parser.add_argument("--seeds", default="1,2,3")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shot_list, seeds = [int(s) for s in args.shots.split(",")], [int(s) for s in args.seeds.split(",")]
    print(json.dumps({d: study(d, shot_list, seeds) for d in args.datasets.split(",")}, indent=1))
