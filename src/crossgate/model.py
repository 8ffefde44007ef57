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
from .methods import METHODS, FewShotClassifier
from .storage import load_arrays, save_arrays

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


def save_model(path: Path, model: SavedModel) -> Path:
    """Write MODEL/model.safetensors and MODEL/model.json atomically (the JSON last); returns the folder."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file; a model is saved as a folder, choose another --out")
    arrays, state = model.classifier.fitted_state()
    meta = {"format": FORMAT, "crossgate_version": __version__, "method": model.method,
            "params": jsonable(model.classifier.get_params()), "state": state, "backbone": model.backbone,
            "backbone_identity": model.backbone_identity, "dataset": model.dataset,
            "classnames": list(model.classnames), "templates": list(model.templates), "info": model.info}
    try:
        json.dumps(meta)
    except TypeError as err:
        raise TypeError(f"{model.method} has learned state that is not JSON: {err}") from None
    # the new pair is written in a folder of its own and swapped in whole: a crash at any point leaves the
    # old model (or, between the two renames, its copy beside it) complete, never a mixed pair
    path.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.new-"))
    try:
        save_arrays(new / STEM, arrays, meta)
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
            os.replace(path, old / path.name)
            os.replace(new, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(new, path)
    finally:
        shutil.rmtree(new, ignore_errors=True)
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
        json.loads(stem.with_name(STEM + ".json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path}: {STEM}.json is not valid JSON; copy the model again or retrain it") from None
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
    if classifier.n_classes_ != len(meta["classnames"]):
        raise UserError(f"model {path} has {classifier.n_classes_} outputs but {len(meta['classnames'])} class "
                        "names; it is damaged")
    return SavedModel(classifier=classifier, method=meta["method"], backbone=meta["backbone"],
                      backbone_identity=meta["backbone_identity"], classnames=meta["classnames"],
                      templates=meta["templates"], dataset=meta.get("dataset", ""), info=meta.get("info", {}))


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
