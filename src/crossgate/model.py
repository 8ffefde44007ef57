"""A fitted few-shot classifier on disk: MODEL/model.safetensors + MODEL/model.json, no pickle.

The JSON records what the weights mean: method, backbone identity, class names, templates, the few-shot
draw, hyperparameters and metrics. Loading rebuilds the estimator from its registry name and restores its
learned state; predicting needs an encoder whose identity equals the saved one, so features always come
from the backbone the head was fitted on.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .encoders.base import same_model
from .errors import UserError
from .jsonio import BadJSON, read_json
from .methods import METHODS, FewShotClassifier
from .storage import load_arrays, save_arrays, write_error

FORMAT = "crossgate-model/1"
STEM = "model"


@dataclass
class SavedModel:
    classifier: FewShotClassifier
    method: str
    backbone: str  # the name it was created from, e.g. openclip:ViT-B-16/openai
    backbone_identity: str  # the encoder's identity: weights digest and preprocessing
    classnames: list[str]
    templates: list[str]
    dataset: str = ""
    info: dict = field(default_factory=dict)  # few-shot draw, hyperparameters, metrics

    def check_backbone(self, identity: str, name: str) -> None:
        if not same_model(identity, self.backbone_identity):
            raise UserError(f"this model was fitted on features of {self.backbone!r} ({self.backbone_identity}), "
                            f"but backbone {name!r} is {identity}; predict with --backbone {self.backbone}")


def check_model_folder(path: Path, replace: bool = False) -> Path:
    """Where a model may be saved: a new or empty folder, or (with `replace`) one that crossgate wrote as a
    model (its two files and nothing else, the weights matching the checksum in model.json). Saving
    replaces the folder whole, so anything else there (a thesis, a dataset's images) would be lost: refused
    in one line; so is a model there, unless the user said to replace it."""
    path = Path(path).expanduser()
    here = Path.cwd().resolve()
    resolved = path.resolve()
    if resolved == here or resolved in here.parents or resolved == Path.home().resolve():
        raise UserError(f"--out {path} is the current folder, one above it or your home folder; a model is saved "
                        "as a folder of its own, which saving replaces: give a new folder name")
    if path.is_symlink():
        raise UserError(f"--out {path} is a link; give the model folder itself, or a new folder name")
    if not path.exists():
        return path
    if not path.is_dir():
        raise UserError(f"{path} is a file; a model is saved as a folder, choose another --out")
    names = sorted(p.name for p in path.iterdir())
    if not names:
        return path
    if names == sorted((f"{STEM}.json", f"{STEM}.safetensors")) and _written_by_crossgate(path):
        if replace:
            return path
        raise UserError(f"--out {path} already holds a model; pass --replace to replace it, or give another "
                        "folder")
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    raise UserError(f"--out {path} holds files that are not a crossgate model ({shown}), and saving replaces the "
                    "folder whole; give a new or empty folder, or a model folder crossgate wrote")


def _written_by_crossgate(path: Path) -> bool:
    entry = load_arrays(path / STEM)
    return entry is not None and isinstance(entry[1], dict) and entry[1].get("format") == FORMAT


def save_model(path: Path, model: SavedModel, replace: bool = True) -> Path:
    """Write MODEL/model.safetensors and MODEL/model.json atomically (the JSON last); returns the folder.
    Only a new, empty or (with `replace`) crossgate model folder is replaced (check_model_folder)."""
    path = check_model_folder(path, replace)
    arrays, state = model.classifier.fitted_state()
    meta = {"format": FORMAT, "crossgate_version": __version__, "method": model.method,
            "params": jsonable(model.classifier.effective_params()), "state": state, "backbone": model.backbone,
            "backbone_identity": model.backbone_identity, "dataset": model.dataset,
            "classnames": list(model.classnames), "templates": list(model.templates), "info": model.info}
    try:
        json.dumps(meta)
    except TypeError as err:
        raise TypeError(f"{model.method} has learned state that is not JSON: {err}") from None
    # the new pair is written in a folder of its own and swapped in whole: a crash at any point leaves the
    # old model (or, between the two renames, its copy beside it) complete, never a mixed pair; a failed
    # rename puts the old model back and leaves no temporary folder behind
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        new = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.new-"))
    except OSError as err:
        raise write_error(path, err) from None
    old = None
    try:
        save_arrays(new / STEM, arrays, meta)
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
            os.replace(path, old / path.name)
            try:
                os.replace(new, path)
            except OSError:
                os.replace(old / path.name, path)
                raise
        else:
            os.replace(new, path)
    except OSError as err:
        raise write_error(path, err) from None
    finally:
        shutil.rmtree(new, ignore_errors=True)
        if old is not None and (path / f"{STEM}.json").exists():  # the old model is in place or replaced
            shutil.rmtree(old, ignore_errors=True)
    return path


def load_model(path: Path) -> SavedModel:
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"model {path} does not exist; create one with `crossgate train --out {path}`")
    stem = path / STEM if path.is_dir() else path.with_suffix("")
    if not (stem.with_name(STEM + ".json").is_file() and stem.with_name(STEM + ".safetensors").is_file()):
        raise UserError(f"{path} is not a crossgate model (expected {STEM}.json and {STEM}.safetensors in it); "
                        "create one with `crossgate train`")
    try:
        read_json(stem.with_name(STEM + ".json"), max_bytes=64 << 20)
    except (OSError, BadJSON) as err:
        raise UserError(f"{path}: {STEM}.json is not valid JSON ({err}); copy the model again or retrain it") from None
    entry = load_arrays(stem)
    if entry is None:
        raise UserError(f"model {path} is damaged: its weights do not match the checksum in {STEM}.json; "
                        "copy it again or retrain it")
    arrays, meta = entry
    _check_document(meta, f"model {path}")
    if meta["method"] not in METHODS:
        raise UserError(f"model {path} uses method {meta['method']!r}, unknown to this crossgate; "
                        f"available: {', '.join(METHODS.names())}")
    classifier = _estimator(meta["method"], meta.get("params") or {}, f"model {path}")
    classifier.load_fitted_state(arrays, meta["state"])
    _check_outputs(classifier, len(meta["classnames"]), f"model {path}")
    return SavedModel(classifier=classifier, method=meta["method"], backbone=meta["backbone"],
                      backbone_identity=meta["backbone_identity"], classnames=meta["classnames"],
                      templates=meta["templates"], dataset=meta.get("dataset", ""), info=meta.get("info", {}))


def _check_outputs(classifier: FewShotClassifier, n_classes: int, what: str) -> None:
    """The restored arrays fit together: one forward pass on a zero feature row gives one probability per
    class name (a weight matrix of another shape is a damaged file, not a traceback or 5 outputs for 3 names)."""
    if classifier.n_classes_ != n_classes:
        raise UserError(f"{what} has {classifier.n_classes_} outputs but {n_classes} class names; it is damaged")
    try:
        with np.errstate(all="ignore"):
            proba = classifier.predict_proba(np.zeros((1, classifier.n_features_in_), np.float32))
    except Exception as err:  # noqa: BLE001  (a shape mismatch inside any method's forward)
        raise UserError(f"{what}: its weights do not fit together ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:160]}); it is damaged, copy it again or retrain it") from None
    if proba.shape != (1, n_classes):
        raise UserError(f"{what} predicts {proba.shape[-1]} classes but has {n_classes} class names; it is damaged")


def _check_document(meta, what: str) -> None:
    """model.json against its schema, before anything is built from it."""
    from .datasets.base import check_template

    if not isinstance(meta, dict):
        raise UserError(f"{what}: {STEM}.json must be a JSON object; the model file is damaged")
    if meta.get("format") != FORMAT:
        raise UserError(f"{what} has format {meta.get('format')!r}; this crossgate reads {FORMAT}")
    fields = {"method": (str, "string"), "params": (dict, "object"), "state": (dict, "object"),
              "backbone": (str, "string"), "backbone_identity": (str, "string"), "classnames": (list, "list"),
              "templates": (list, "list")}
    for key, (kind, json_name) in fields.items():
        if not isinstance(meta.get(key), kind):
            raise UserError(f"{what}: {STEM}.json needs {key!r} as a JSON {json_name}, got "
                            f"{type(meta.get(key)).__name__}; the model file is damaged")
    names = meta["classnames"]
    if not names or not all(isinstance(n, str) and n.strip() for n in names) or len(set(names)) != len(names):
        raise UserError(f"{what}: classnames must be distinct non-empty strings; the model file is damaged")
    for template in meta["templates"]:
        if not isinstance(template, str):
            raise UserError(f"{what}: templates must be strings; the model file is damaged")
        check_template(template)
    for key, kind in (("dataset", str), ("info", dict)):
        if key in meta and not isinstance(meta[key], kind):
            raise UserError(f"{what}: {key!r} has the wrong type; the model file is damaged")


def _estimator(method: str, params: dict, what: str) -> FewShotClassifier:
    """A fresh estimator with the saved config and seed, each validated before use."""
    from .config import config_from_dict

    cls = METHODS.factory(method)
    if not isinstance(params, dict):
        raise UserError(f"{what}: params must be a JSON object; the model file is damaged")
    seed = params.get("random_state")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise UserError(f"{what}: random_state must be an integer or null, got {seed!r}; the model file is damaged")
    config = params.get("config")
    if config is not None and cls.config_class is not None:
        config = config_from_dict(cls.config_class, config, what)
    return cls(config=config, random_state=seed)


def jsonable(value):
    """Config dataclasses, tuples and numpy scalars as plain JSON values."""
    if is_dataclass(value):
        return asdict(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
