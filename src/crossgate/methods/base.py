"""scikit-learn-style few-shot classifiers over cached feature arrays.

`__init__` only stores hyperparameters; `fit` learns state whose names end in `_`; hyperparameters that a
method searches are chosen on the few-shot validation split passed to `fit`, never on test data.
"""
from __future__ import annotations

import inspect

import numpy as np
import torch

from ..cache import TextFeatures, unit_rows  # noqa: F401  (unit_rows: re-exported for the methods)
from ..errors import UserError
from ..registry import Registry


def check_features(x, what: str = "X", dim: int | None = None) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise UserError(f"{what} must be a 2-D array (n_samples, n_features), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise UserError(f"{what} must be numeric, got dtype {x.dtype}")
    if dim is not None and x.shape[1] != dim:
        raise UserError(f"{what} has {x.shape[1]} features but the classifier was fitted on {dim}")
    if not np.all(np.isfinite(x)):
        raise UserError(f"{what} contains NaN or infinite values; check the features or re-extract them")
    return x.astype(np.float32, copy=False)


def check_labels(y, n: int, what: str = "y") -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise UserError(f"{what} must be a 1-D array of {n} class indices, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise UserError(f"{what} must hold non-negative integer class indices, got dtype {y.dtype}")
    return y.astype(np.int64, copy=False)


class FewShotClassifier:
    uses_text = False  # True when fit needs the class text features

    def get_params(self) -> dict:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def _check_fit(self, x, y, text: TextFeatures | None, val):
        x = check_features(x)
        y = check_labels(y, len(x))
        if self.uses_text and text is None:
            raise UserError(f"{type(self).__name__} needs the class text features: pass text=")
        n_classes = int(text.labels.max()) + 1 if text is not None else int(y.max()) + 1
        if len(y) and y.max() >= n_classes:
            raise UserError(f"label {int(y.max())} is out of range for {n_classes} classes")
        if val is not None:
            xv = check_features(val[0], "validation X", x.shape[1])
            val = (xv, check_labels(val[1], len(xv), "validation y"))
        self.n_features_in_ = x.shape[1]
        self.n_classes_ = n_classes
        return x, y, val

    def fit(self, x, y, *, text: TextFeatures | None = None, val=None) -> FewShotClassifier:
        raise NotImplementedError

    def _logits(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict_proba(self, x) -> np.ndarray:
        if not hasattr(self, "n_features_in_"):
            raise UserError(f"{type(self).__name__} is not fitted yet; call fit first")
        logits = self._logits(check_features(x, dim=self.n_features_in_)).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)

    def predict(self, x) -> np.ndarray:
        return self.predict_proba(x).argmax(axis=1)

    def score(self, x, y) -> float:
        """Accuracy as a fraction in [0, 1]."""
        y = check_labels(y, len(np.asarray(x)))
        return float(np.mean(self.predict(x) == y)) if len(y) else float("nan")

    def with_text(self, text: TextFeatures) -> FewShotClassifier:
        """This fitted classifier consulting `text` instead of its prompts at prediction time (the
        robustness benchmark's noisy prompts). Methods whose predictions read no text return themselves."""
        return self

    # --- fitted state as arrays + JSON values, for saving without pickle (see crossgate.model) ---

    def _module_spec(self, name: str, module: torch.nn.Module) -> dict:
        """What `_build_module` needs to rebuild a fitted sub-module before loading its weights."""
        raise NotImplementedError(f"{type(self).__name__} cannot describe its module {name}")

    def _build_module(self, name: str, spec: dict) -> torch.nn.Module:
        raise NotImplementedError(f"{type(self).__name__} cannot rebuild its module {name}")

    def fitted_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """The learned attributes (names ending in `_`): arrays by name, the rest as JSON-able values."""
        if not hasattr(self, "n_features_in_"):
            raise UserError(f"{type(self).__name__} is not fitted yet; call fit first")
        arrays, values, kinds = {}, {}, {}
        for name, value in vars(self).items():
            if not name.endswith("_") or name.startswith("_"):
                continue
            if isinstance(value, torch.nn.Module):
                kinds[name] = {"module": self._module_spec(name, value)}
                arrays.update({f"{name}.{k}": t.detach().cpu().numpy() for k, t in value.state_dict().items()})
            elif isinstance(value, torch.Tensor):
                kinds[name] = "tensor"
                arrays[name] = value.detach().cpu().numpy()
            elif isinstance(value, np.ndarray):
                kinds[name] = "array"
                arrays[name] = value
            else:
                values[name] = value
        return arrays, {"values": values, "arrays": kinds}

    def load_fitted_state(self, arrays: dict[str, np.ndarray], state: dict) -> FewShotClassifier:
        """Restore what `fitted_state` returned; a missing or misshapen array is a UserError."""
        for name, value in state["values"].items():
            setattr(self, name, value)
        for name, kind in state["arrays"].items():
            if isinstance(kind, dict):
                module = self._build_module(name, kind["module"])
                prefix = f"{name}."
                weights = {k[len(prefix):]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith(prefix)}
                try:
                    module.load_state_dict(weights, strict=True)
                except RuntimeError as err:
                    raise UserError(f"saved weights of {name} do not fit {type(self).__name__}: "
                                    f"{str(err).splitlines()[0]}") from None
                module.requires_grad_(False)
                setattr(self, name, module)
            elif name not in arrays:
                raise UserError(f"saved state lacks the array {name!r}; the model file is incomplete")
            else:
                setattr(self, name, torch.from_numpy(arrays[name]) if kind == "tensor" else arrays[name])
        return self


METHODS: Registry[FewShotClassifier] = Registry("method")
