"""The steps cli, bench and benchmarks/ share: load (cached) features, draw the few-shot split, fit one
method on it, and encode image files for prediction. No printing."""
from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .cache import DatasetFeatures, FeatureCache
from .errors import UserError
from .methods import FewShotClassifier, create_method, new_class_methods
from .model import jsonable
from .results import harmonic_mean


def feature_cache(settings) -> FeatureCache:
    return FeatureCache(settings.cache_dir, settings.batch_size, settings.loader_workers(), settings.progress,
                        settings.on_bad_image, settings.chunk_images)


def load_features(dataset_name: str = "fashion-mnist", backbone: str = "lite", settings=None, *, templates=None,
                  prompts: str | None = None, flip: bool = False, corrupt: tuple = (), corrupt_seed: int = 0,
                  corrupt_per_class: int | None = None,
                  shift: tuple = (), encoder=None, dataset=None):
    """(encoder, dataset, features): every split, the class texts, and the corrupted test data asked for
    (with `corrupt_per_class`, copies of the first that many test images of each class), from the cache
    or computed into it. `settings` (crossgate.settings.Settings) defaults to what the CLI does without
    flags: the cache in $CROSSGATE_CACHE or ~/.cache/crossgate, the device auto-detected. `encoder` and
    `dataset`, when given, are those names already built (a CLIP model is not loaded twice). `shift`: names of
    shift sets (imagenet_v2, ...) whose test features are loaded too, to score the fitted models on. `prompts`:
    'templates' (None), 'cupl' or a description bank file (datasets.prompts)."""
    from .datasets import load_dataset
    from .encoders import create_encoder
    from .settings import Settings

    settings = settings or Settings()
    dataset = dataset or load_dataset(dataset_name, settings, templates=templates, prompts=prompts)
    encoder = encoder or create_encoder(backbone, cache_dir=settings.cache_dir, device=settings.torch_device(),
                                        decode=settings.decode)
    cache = feature_cache(settings)
    feats = cache.features(encoder, dataset, flip=flip)
    if corrupt:
        corrupted, positions = cache.corrupted_features(encoder, dataset, corrupt, corrupt_seed, corrupt_per_class,
                                                        kept=feats.test.kept)
        rows = None if positions is None else feats.test.rows(positions, "corrupted test subset")
        feats = replace(feats, corrupted=corrupted, corrupted_rows=rows)
    if shift:
        feats = replace(feats, shifted=shift_features(cache, encoder, dataset, shift, settings))
    return encoder, dataset, feats


def shift_features(cache, encoder, dataset, names, settings) -> dict:
    """name -> (test features of that shift set, the classes it holds), for a model fitted on `dataset`."""
    from .datasets import load_dataset

    out = {}
    for name in names:
        shifted = load_dataset(name, settings)
        if not getattr(shifted, "test_only", False):
            raise UserError(f"--shift takes shift sets (test-only datasets such as imagenet_v2), not {name!r}")
        if list(shifted.classnames) != list(dataset.classnames):
            raise UserError(f"{name} has other classes than {dataset.name} (its classnames.txt differs); --shift "
                            f"scores models fitted on the dataset the shift set belongs to (imagenet)")
        out[name] = (cache.image_features(encoder, shifted, "test"), shifted.classes)
    return out


def add_augmented_views(features: DatasetFeatures, cache: FeatureCache, encoder, dataset, draws, passes: int,
                        seed: int = 0) -> DatasetFeatures:
    """`features` with `passes` augmented views of each draw's training images ((shots, seed) pairs), from the
    cache or encoded into it: what --aug-views gives the methods that use them (FewShotClassifier.aug_views)."""
    if passes <= 0:
        return features
    out = {}
    for shots, draw_seed in draws:
        rows = features.few_shot(shots, draw_seed).train
        positions = rows if features.train.kept is None else features.train.kept[rows]
        out[(shots, draw_seed)] = cache.augmented_features(encoder, dataset, positions, passes, seed)
    return replace(features, augmented=out)


def pct(value: float) -> float:
    return round(100.0 * value, 4)


@dataclass
class Scored:
    """A fitted classifier's labels for some images and, for gate methods, its selected texts (best first)
    and their weights, from one pass."""

    pred: np.ndarray
    indices: np.ndarray | None = None
    weights: np.ndarray | None = None

    def accuracy(self, labels: np.ndarray) -> float:
        return float(np.mean(self.pred == labels))

    def subset(self, rows) -> Scored:
        return Scored(self.pred[rows], *(None if a is None else a[rows] for a in (self.indices, self.weights)))


def score_images(clf: FewShotClassifier, x: np.ndarray) -> Scored:
    if hasattr(clf, "predict_explain"):
        return Scored(*clf.predict_explain(x))
    return Scored(clf.predict(x))


def make_method(method: str, seed: int, config=None, device: str = "cpu") -> FewShotClassifier:
    """A fresh estimator with its config (None: the method's defaults), seed and fit device."""
    return create_method(method, config=config, random_state=seed, device=device)


def selection_images(features: DatasetFeatures, split, select_on: str) -> tuple[np.ndarray, np.ndarray]:
    """The labelled images a fit chooses its hyperparameters and checkpoints on: the draw's few-shot
    validation images (crossgate's protocol), the whole validation split, or the test split (only to
    measure what other papers' protocols are worth)."""
    if select_on == "few-shot-val":
        return features.val.x[split.val], features.val.labels[split.val]
    if select_on == "full-val":
        return features.val.x, features.val.labels
    if select_on == "test":
        return features.test.x, features.test.labels
    raise UserError(f"unknown selection protocol {select_on!r}; available: few-shot-val, full-val, test")


def fit_one(features: DatasetFeatures, method: str, shots: int | str, seed: int,
            config=None, device: str = "cpu", fitted: dict | None = None,
            select_on: str = "few-shot-val") -> tuple[FewShotClassifier, dict]:
    """Fit one method on one few-shot draw: the fitted estimator and its results row (accuracies in %).
    `select_on`: where it chooses (selection_images); the row says which."""
    return fit_scored(features, method, shots, seed, config, device, fitted, select_on)[:2]


def fit_scored(features: DatasetFeatures, method: str, shots: int | str, seed: int,
               config=None, device: str = "cpu", fitted: dict | None = None,
               select_on: str = "few-shot-val") -> tuple[FewShotClassifier, dict, Scored]:
    """fit_one, and the test images' Scored, for what scores the same images again (the robustness rows)."""
    if len(features.test.labels) == 0:
        raise UserError("no test images are left (every one unreadable and skipped, or none listed); fix the "
                        "images or the split, a test accuracy of nothing is not a result")
    split = features.few_shot(shots, seed)
    xtr, ytr = features.few_shot_train(split.train)
    xval, yval = selection_images(features, split, select_on)
    clf = make_method(method, seed, config, device)
    # methods built on others (gate-joint) take the draw's fits already made instead of refitting them
    extra_args = {"fitted_bases": fitted} if fitted and "fitted_bases" in inspect.signature(clf.fit).parameters else {}
    extra_args.update(_views_for(clf, features, shots, seed, split.train))
    start = time.perf_counter()
    clf.fit(xtr, ytr, text=features.text, val=(xval, yval), **extra_args)
    fit_seconds = time.perf_counter() - start
    test = score_images(clf, features.test.x)
    extra = {}
    if test.indices is not None:  # how varied the gate's selection is (a collapse shows), and how often its
        extra.update(clf.selection_stats_of(test.indices, test.weights, features.test.labels))  # first pick is right
    return clf, {
        **extra,
        "method": method, "shots": shots, "seed": seed,
        "acc_train": pct(clf.score(xtr, ytr)),
        "acc_val": pct(clf.score(xval, yval)),
        "acc_test": pct(test.accuracy(features.test.labels)),
        "fit_seconds": round(fit_seconds, 4),
        "hparams": jsonable(clf.chosen_),
        "params": jsonable(clf.effective_params()),
        "n_train": len(ytr), "n_val": len(yval), "n_test": len(features.test.labels),
        "n_classes": len(features.classnames),
        "split_source": split.source, "train_views": features.train_views(), "select_on": select_on,
        "aug_views_used": len(extra_args["views"][0]) if "views" in extra_args else 0,
    }, test


def base_class_count(n_classes: int) -> int:
    """CoCoOp's base-to-new split: classes in label order, the first ceil(C/2) are base, the rest new."""
    return math.ceil(n_classes / 2)


def fit_base_to_new(features: DatasetFeatures, method: str, shots: int, seed: int, config=None, device: str = "cpu",
                    select_on: str = "few-shot-val") -> tuple[FewShotClassifier, dict]:
    """Base-to-new (CoCoOp's protocol): fit on the base classes' few-shot images (and their texts), score base
    test images among the base classes and new test images among the new classes, which the method names
    from their texts alone (FewShotClassifier.for_new_classes); the row's acc_test is the harmonic mean."""
    n_classes = len(features.classnames)
    n_base = base_class_count(n_classes)
    clf = make_method(method, seed, config, device)
    if n_classes < 2 or not clf.names_new_classes:
        raise UserError(f"base-to-new needs two classes or more and a method that names unseen classes from text "
                        f"({', '.join(new_class_methods())}); got {n_classes} class(es) and {method}")
    split = features.few_shot(shots, seed)
    base_train = features.train.labels[split.train] < n_base
    xtr, ytr = features.few_shot_train(split.train[base_train])
    xval, yval = selection_images(features, split, select_on)
    xval, yval = xval[yval < n_base], yval[yval < n_base]
    extra = _views_for(clf, features, shots, seed, split.train, base_train)
    text = features.text.of_classes(np.arange(n_base))
    start = time.perf_counter()
    clf.fit(xtr, ytr, text=text, val=(xval, yval), **extra)
    new = clf.for_new_classes(features.text.of_classes(np.arange(n_base, n_classes)), xtr, ytr, **extra)
    fit_seconds = time.perf_counter() - start
    test = features.test
    is_base = test.labels < n_base
    acc_base = pct(clf.score(test.x[is_base], test.labels[is_base]))
    acc_new = pct(new.score(test.x[~is_base], test.labels[~is_base] - n_base))
    return clf, {
        "method": method, "shots": shots, "seed": seed, "protocol": "base2new",
        "acc_base": acc_base, "acc_new": acc_new, "acc_test": round(harmonic_mean(acc_base, acc_new), 4),
        "acc_val": pct(clf.score(xval, yval)), "fit_seconds": round(fit_seconds, 4),
        "hparams": jsonable(clf.chosen_), "params": jsonable(clf.effective_params()),
        "n_train": len(ytr), "n_val": len(yval), "n_test_base": int(is_base.sum()),
        "n_test_new": int((~is_base).sum()), "n_test": len(test.labels), "n_classes": n_classes,
        "n_base_classes": n_base, "split_source": split.source, "train_views": features.train_views(),
        "select_on": select_on, "aug_views_used": len(extra["views"][0]) if extra else 0,
    }


def _views_for(clf, features: DatasetFeatures, shots, seed: int, rows: np.ndarray, keep=None) -> dict:
    """{"views": (augmented passes, labels)} of the draw's training images (`keep`: a mask of them) when
    --aug-views cached some and the method's official code uses them; else {}."""
    views = features.augmented.get((shots, seed))
    if views is None or not clf.aug_views:
        return {}
    keep = np.ones(len(rows), bool) if keep is None else keep
    return {"views": (views[:, keep], features.train.labels[rows][keep])}


def encode_files(encoder, files: list[Path], settings) -> tuple[np.ndarray, list[Path], list[Path]]:
    """(features, the files read, the files skipped as unreadable); with --on-bad-image fail an unreadable
    file stops everything, listing each one."""
    from .datasets.base import files_split
    from .extraction import UnreadableImages, encode_batches
    from .progress import progress

    items = files_split(Path.cwd(), [str(f) for f in files], np.zeros(len(files)), "it was given on the command line")
    good, feats, bad = [], [], []
    with progress(total=len(files), desc=f"encoding {len(files):,} image(s)", unit="img",
                  enabled=settings.progress) as bar:
        for positions, x, errors in encode_batches(encoder, items, list(range(len(files))), settings.batch_size,
                                                   settings.loader_workers()):
            good += positions
            feats += [x] if x is not None else []
            bad += errors
            bar.update(len(positions) + len(errors))
    if bad and settings.on_bad_image == "fail":
        raise UnreadableImages([str(files[i]) for i, _ in bad], bad[0][1])
    if not good:
        raise UserError("none of the given images could be read")
    return np.concatenate(feats), [files[i] for i in good], [files[i] for i, _ in bad]
