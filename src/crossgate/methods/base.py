"""scikit-learn-style few-shot classifiers over cached feature arrays.

`__init__` only stores hyperparameters: `config` (the method's own config dataclass, `config_class`; None
means its defaults) and `random_state`. `fit` learns state whose names end in `_`; hyperparameters that a
method searches are chosen on the few-shot validation split passed to `fit`, never on test data.

Adding a method is one file: a config dataclass (see crossgate.config), an estimator with
`config_class = ThatConfig`, and `@METHODS.register("name", help="... (Author et al., Venue Year)")`.
Its CLI flags, bench settings, results rows and saved models follow from the config.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError

from ..errors import UserError
from ..features import TextFeatures, unit_rows  # noqa: F401  (unit_rows: re-exported for the methods)
from ..registry import Registry


class BadArrayType(UserError, TypeError):
    """An array of the wrong kind (sparse, objects that are not numbers): a TypeError, as numpy says it."""


class NotFitted(UserError, NotFittedError):
    """predict / score / save before fit: a UserError for the CLI, a NotFittedError for scikit-learn."""


def check_features(x, what: str = "X", dim: int | None = None, owner: str = "the classifier") -> np.ndarray:
    """A 2-D finite float32 array, checked by scikit-learn's check_array (its messages, on one line)."""
    from sklearn.utils import check_array

    try:
        x = check_array(x, dtype=np.float32, ensure_all_finite=True, input_name=what,
                        ensure_min_features=1 if dim is None else 0)
    except (ValueError, TypeError) as err:
        message = " ".join(str(err).split())
        if "NaN" in message or "infinity" in message:
            message += " (NaN or infinite values: check the features or re-extract them)"
        raise (BadArrayType if isinstance(err, TypeError) else UserError)(message) from None
    if dim is not None and x.shape[1] != dim:
        raise UserError(f"{what} has {x.shape[1]} features, but {owner} is expecting {dim} features as input "
                        "(features of another backbone?)")
    return x


def check_labels(y, n: int, what: str = "y") -> np.ndarray:
    if y is None:
        raise UserError("fit requires y to be passed, but the target y is None; give the training labels")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:  # a column vector, as scikit-learn takes it (with a warning)
        from sklearn.exceptions import DataConversionWarning

        warnings.warn(f"A column-vector {what} was passed when a 1d array was expected; pass shape (n_samples,)",
                      DataConversionWarning, stacklevel=3)
        y = y.ravel()
    if y.ndim != 1 or len(y) != n:
        raise UserError(f"{what} must be a 1-D array of {n} class labels, got shape {y.shape}")
    return y


def class_indices(y: np.ndarray, classes: np.ndarray, what: str = "y") -> np.ndarray:
    """Labels as indices into `classes`; a label outside them is a UserError."""
    at = np.searchsorted(classes, y)
    at_clipped = np.minimum(at, len(classes) - 1)
    if len(y) and not np.all(classes[at_clipped] == y):
        unknown = np.asarray(y)[classes[at_clipped] != y][0]
        raise UserError(f"{what} holds the label {unknown!r}, which is not a class of the training labels "
                        f"({', '.join(map(str, classes[:10]))}{', ...' if len(classes) > 10 else ''})")
    return at_clipped.astype(np.int64)


def concatenated(views: tuple[np.ndarray, np.ndarray] | None, x: np.ndarray, y: np.ndarray):
    """(samples, labels): every pass of checked views one after the other (pass-major, as the official codes
    torch.cat their augment epochs), or x, y themselves without views."""
    if views is None:
        return x, y
    stack, labels = views
    return stack.reshape(-1, stack.shape[2]), np.tile(labels, len(stack))


def tensor(a, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An array as a tensor on the device the fit runs on (torch's default device, which `fit` sets)."""
    return torch.as_tensor(np.asarray(a), dtype=dtype, device=torch.get_default_device())


def numpy_of(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def drawn(t: torch.Tensor) -> torch.Tensor:
    """A tensor drawn on the CPU with a seeded CPU generator, on the fit's device: the same draws, so the
    same batches, whatever the device."""
    return t.to(torch.get_default_device())


def seeded_on_cpu(seed: int, build, *args):
    """`build(*args)` with its random initialisation drawn from the CPU generator seeded with `seed`, then
    moved to the fit's device: the GPU's generator draws other numbers."""
    torch.manual_seed(seed)
    with torch.device("cpu"):
        module = build(*args)
    return module.to(torch.get_default_device())


def _on_device(fit):
    """Run `fit` with `self.device` as torch's default device, then bring the learned state to the CPU:
    predictions, saving and pickling need no GPU (and a fitted estimator computes on the CPU)."""
    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        device = torch.device(self._device())
        # already the default device (the CPU, usually): no mode intercepting every torch call (5-8% of a fit)
        with contextlib.nullcontext() if torch.get_default_device() == device else device, warnings.catch_warnings():
            # scikit-learn guesses "regression" when most labels are distinct, as in any 1-shot draw of more than
            # 20 classes: a few-shot fit is classification by construction
            warnings.filterwarnings("ignore", message=".*could represent a regression problem", category=UserWarning)
            if self.config is not None and self.config_class is not None and isinstance(self.config, self.config_class):
                from ..config import checked_config

                checked_config(self.config, f"{type(self).__name__}'s config")  # one built in Python skips the parser
            result = fit(self, *args, **kwargs)
        _state_to_cpu(self)
        _check_finite(self)
        return result

    return wrapper


def _check_finite(estimator) -> None:
    """Training that diverged leaves NaN or infinite weights, which would predict class 0 for everything."""
    for name, value in vars(estimator).items():
        if not name.endswith("_") or name.startswith("_"):
            continue
        tensors = value.state_dict().values() if isinstance(value, torch.nn.Module) else [value]
        for t in tensors:
            a = t.detach().numpy() if isinstance(t, torch.Tensor) else t
            if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
                raise UserError(f"{type(estimator).__name__}'s fit gave NaN or infinite values in its learned "
                                f"{name.rstrip('_')}; {_divergence_advice(estimator)}")


def _divergence_advice(estimator) -> str:
    """What to change, in the flags of this method: its learning rate where it has one, else its grids."""
    from dataclasses import fields

    from ..config import flag_prefix

    cls = estimator.config_class
    if cls is None:
        return "check the features for extreme values"
    name = next((n for n in METHODS.names() if METHODS.factory(n) is type(estimator)), type(estimator).__name__)
    names = [f.name for f in fields(cls) if f.init]
    rates = [n for n in names if n in ("lr", "lrs")]
    flags = [f"--{flag_prefix(cls, name)}-{n.replace('_', '-')}" for n in (rates or names[:3])]
    if rates:
        return f"lower its learning rate ({' / '.join(flags)})"
    return (f"it has no learning rate: one of its settings is extreme (e.g. {', '.join(flags)}); use values "
            "nearer the defaults")


def _check_text(text: TextFeatures) -> None:
    """Prompts for every class, one label and one text per feature row, finite: a class without a prompt
    would be a NaN class mean and a fit that "diverges" for no reason the user can see."""
    n = len(text.labels)
    if text.x.ndim != 2 or len(text.x) != n or len(text.native) != n or len(text.texts) != n or n == 0:
        raise UserError(f"text features must have one row, label and text per prompt; got {len(text.x)} rows, "
                        f"{n} labels and {len(text.texts)} texts")
    labels = np.asarray(text.labels)
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise UserError("text labels must be class indices (non-negative integers)")
    missing = sorted(set(range(int(labels.max()) + 1)) - set(labels.tolist()))
    if missing:
        raise UserError(f"text features have no prompt for class {missing[0]} ({len(missing)} classes without "
                        "one); every class needs at least one prompt")
    if not (np.all(np.isfinite(text.x)) and np.all(np.isfinite(text.native))):
        raise UserError("text features hold NaN or infinite values; re-extract them")


def _init_with_fields(config_class):
    """An __init__ taking, beside config, random_state and device, every field of `config_class` by name
    (default None: the config's), stored as given, with the signature scikit-learn reads its parameters from
    (so get_params, set_params, clone and GridSearchCV see each field)."""
    import inspect

    from ..config import config_fields

    names = [f.name for f in config_fields(config_class)]

    def __init__(self, config=None, random_state=None, device="cpu", **fields):
        unknown = sorted(set(fields) - set(names))
        if unknown:
            raise TypeError(f"{type(self).__name__} got an unexpected keyword argument {unknown[0]!r}; its config "
                            f"fields: {', '.join(names)}")
        self.config = config  # the method's config dataclass; None means its defaults
        self.random_state = random_state  # seeds initialisation and batch draws where the method has any
        self.device = device  # where fit computes ("cpu", "cuda", "cuda:1"); the fitted state ends on the CPU
        for name in names:  # each None unless set: then it overrides the config's value
            setattr(self, name, fields.get(name))

    keyword = inspect.Parameter.KEYWORD_ONLY
    __init__.__signature__ = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d)
           for n, d in (("config", None), ("random_state", None), ("device", "cpu"))]
        + [inspect.Parameter(n, keyword, default=None) for n in names])
    return __init__


def _state_to_cpu(estimator) -> None:
    for name, value in list(vars(estimator).items()):
        if not name.endswith("_"):
            continue
        if isinstance(value, (torch.Tensor, torch.nn.Module)):
            setattr(estimator, name, value.cpu())
        for inner in value.values() if isinstance(value, dict) else [value]:
            if isinstance(inner, FewShotClassifier):
                _state_to_cpu(inner)


def softmax_proba(logits: np.ndarray) -> np.ndarray:
    """Class probabilities from logits, as predict_proba returns them (float32; predict is their argmax)."""
    logits = logits.astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


class FewShotClassifier(ClassifierMixin, BaseEstimator):
    uses_text = False  # True when fit needs the class text features
    config_class = None  # the method's config dataclass
    # how fit(views=...) uses augmented views of the training images, as the method's official code does
    # (said by `crossgate methods`); None: fit takes no views
    aug_views: str | None = None
    names_new_classes = False  # for_new_classes exists: the method can classify classes it was not trained on

    def for_new_classes(self, text: TextFeatures, x, y, views=None) -> FewShotClassifier:
        """This fitted model turned to classes it never saw, named by `text` (base-to-new); x, y and views:
        what fit was given (a method may synthesise the new classes from them)."""
        raise NotImplementedError(f"{type(self).__name__} cannot name classes it was not trained on")

    def __init__(self, config=None, random_state: int | None = None, device: str = "cpu"):
        self.config = config  # the method's config dataclass; None means its defaults
        self.random_state = random_state  # seeds initialisation and batch draws where the method has any
        self.device = device  # where fit computes ("cpu", "cuda", "cuda:1"); the fitted state ends on the CPU

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "fit" in cls.__dict__:
            cls.fit = _on_device(cls.__dict__["fit"])
        if cls.config_class is not None and "__init__" not in cls.__dict__:
            cls.__init__ = _init_with_fields(cls.config_class)

    def effective_params(self) -> dict:
        """What the fit is made of, for results rows and saved models: the config in force (its fields set
        one by one folded in), the seed and the device."""
        return {"config": self._config(), "random_state": self.random_state, "device": self.device}

    def set_params(self, **params):
        """scikit-learn's set_params; `config__<field>` (the nested spelling) sets the field itself."""
        return super().set_params(**{k.removeprefix("config__"): v for k, v in params.items()})

    def _device(self) -> str:
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError):
            raise UserError(f"device must be a torch device such as 'cpu' or 'cuda', got {self.device!r}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"device {self.device!r}, but this torch ({torch.__version__}) sees no CUDA GPU; "
                            "use device='cpu'")
        return str(device)

    def _config(self):
        """The config in force: the one given, else the defaults, with the fields set one by one (as
        scikit-learn's searches set them: `logreg.set_params(l2_grid=(1e-3,))`) over it."""
        if self.config is None:
            config = self.config_class()
        elif not isinstance(self.config, self.config_class):
            raise UserError(f"{type(self).__name__} takes a {self.config_class.__name__} as config, "
                            f"got {type(self.config).__name__}")
        else:
            config = self.config
        from dataclasses import replace

        from ..config import config_fields

        given = {f.name: getattr(self, f.name) for f in config_fields(self.config_class)
                 if getattr(self, f.name, None) is not None}
        return replace(config, **given) if given else config

    def _seed(self) -> int:
        seed = 0 if self.random_state is None else self.random_state
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 63:
            raise UserError(f"random_state must be an integer in [0, 2**63), got {seed!r}")
        return int(seed)

    def _check_fit(self, x, y, text: TextFeatures | None, val):
        """(x, y as class indices, val with its labels as indices), with classes_, n_classes_ and
        n_features_in_ set. With text=, the classes are the text's (labels are indices into its class
        names); without, the sorted distinct training labels, of any type (scikit-learn's convention)."""
        from sklearn.utils.multiclass import check_classification_targets

        x = check_features(x)
        y = check_labels(y, len(x))
        if self.uses_text and text is None:
            raise UserError(f"{type(self).__name__} needs the class text features: pass text=")
        if text is not None and not isinstance(text, TextFeatures):
            raise UserError(f"text= must be a TextFeatures, got {type(text).__name__}")
        if text is not None:
            _check_text(text)
        if len(y) == 0:
            raise UserError("fit needs at least one training sample")
        check_classification_targets(y)  # "Unknown label type" for continuous targets, as scikit-learn says
        if text is not None:
            if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
                raise UserError(f"with text=, y must hold class indices into the text's classes (non-negative "
                                f"integers), got dtype {y.dtype}")
            classes = np.arange(text.n_classes)
        else:
            classes = np.unique(y)
        y = class_indices(y, classes)
        if text is not None and text.x.shape[1] != x.shape[1]:
            raise UserError(f"text features have {text.x.shape[1]} dimensions but images have {x.shape[1]}; "
                            "both must come from one backbone")
        if val is not None:
            xv = check_features(val[0], "validation X", x.shape[1])
            val = (xv, class_indices(check_labels(val[1], len(xv), "validation y"), classes, "validation y"))
        self.classes_ = classes
        self.n_features_in_ = x.shape[1]
        self.n_classes_ = len(classes)
        return x, y, val

    def _check_views(self, views, dim: int) -> tuple[np.ndarray, np.ndarray] | None:
        """views=(array (passes, n, dim), labels (n,) as class indices of this fit), checked; None stays None."""
        if views is None:
            return None
        try:
            stack, labels = views
        except (TypeError, ValueError):
            raise UserError("views= must be (features of shape (passes, n, dim), their n labels)") from None
        stack = np.asarray(stack, dtype=np.float32)
        if stack.ndim != 3 or stack.shape[0] == 0 or stack.shape[2] != dim or not np.all(np.isfinite(stack)):
            raise UserError(f"views= features must be finite, of shape (passes, n, {dim}); got {stack.shape}")
        labels = class_indices(check_labels(labels, stack.shape[1], "views labels"), self.classes_, "views labels")
        return stack, labels

    def _val_or_train(self, x, y, val):
        """The few-shot validation split; without one, selection falls back to the training data, and says so
        (there every setting may fit perfectly, and ties go to the first of a grid)."""
        if val is None:
            warnings.warn(f"{type(self).__name__}.fit without val=: its hyperparameters and checkpoints are chosen "
                          "on the training data itself, where many fit perfectly (ties go to the first of each "
                          "grid, and logreg takes its first L2 strength); pass val=(X_val, y_val) to choose on "
                          "held-out images", UserWarning, stacklevel=3)
        return val if val is not None else (x, y)

    def fit(self, x, y, *, text: TextFeatures | None = None, val=None) -> FewShotClassifier:
        raise NotImplementedError

    def _logits(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict_proba(self, x) -> np.ndarray:
        return softmax_proba(self._logits(self._checked_input(x)))

    def _checked_input(self, x) -> np.ndarray:
        if not hasattr(self, "n_features_in_"):
            raise NotFitted(f"{type(self).__name__} is not fitted yet; call fit first")
        return check_features(x, dim=self.n_features_in_, owner=type(self).__name__)

    def predict(self, x) -> np.ndarray:
        best = self.predict_proba(x).argmax(axis=1)  # first: it says "not fitted" before classes_ is missed
        return self.classes_[best]

    zero_shot_attr: str | None = None  # the fitted attribute holding the zero-shot class weights, if any

    def with_text(self, text: TextFeatures) -> FewShotClassifier:
        """This fitted classifier consulting `text` instead of its prompts at prediction time (the
        robustness benchmark's noisy prompts). Methods whose predictions read no text return themselves."""
        if self.zero_shot_attr is None:
            return self
        other = copy.copy(self)
        setattr(other, self.zero_shot_attr, text.class_means())
        return other

    # --- fitted state as arrays + JSON values, for saving without pickle (see crossgate.model) ---

    def _module_spec(self, name: str, module: torch.nn.Module) -> dict:
        """What `_build_module` needs to rebuild a fitted sub-module before loading its weights."""
        raise NotImplementedError(f"{type(self).__name__} cannot describe its module {name}")

    def _build_module(self, name: str, spec: dict) -> torch.nn.Module:
        raise NotImplementedError(f"{type(self).__name__} cannot rebuild its module {name}")

    def fitted_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """The learned attributes (names ending in `_`): arrays by name, the rest as JSON-able values."""
        if not hasattr(self, "n_features_in_"):
            raise NotFitted(f"{type(self).__name__} is not fitted yet; call fit first")
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
            elif isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
                kinds[name] = "array"
                arrays[name] = value
            elif isinstance(value, np.ndarray):  # class labels that are strings: a JSON list
                values[name] = value.tolist()
            else:
                values[name] = value
        return arrays, {"values": values, "arrays": kinds}

    def load_fitted_state(self, arrays: dict[str, np.ndarray], state: dict) -> FewShotClassifier:
        """Restore what `fitted_state` returned; a missing, misshapen or non-finite array, or a state that
        would set anything but learned attributes (names ending in `_`), is a UserError."""
        _check_state(state, arrays, type(self).__name__)
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
        for name in ("n_features_in_", "n_classes_"):
            value = getattr(self, name, None)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"saved {name} of {type(self).__name__} must be a positive integer, got {value!r}; "
                                "the model file is damaged")
        # models saved before classes_ existed predicted class indices
        self.classes_ = np.asarray(getattr(self, "classes_", np.arange(self.n_classes_)))
        if self.classes_.shape != (self.n_classes_,):
            raise UserError(f"saved classes_ of {type(self).__name__} does not list {self.n_classes_} classes; "
                            "the model file is damaged")
        return self


def _check_state(state, arrays: dict, owner: str) -> None:
    def damaged(why: str):
        return UserError(f"saved state of {owner} {why}; the model file is damaged")

    if not isinstance(state, dict) or not isinstance(state.get("values"), dict) \
            or not isinstance(state.get("arrays"), dict):
        raise damaged("must be an object with 'values' and 'arrays' objects")
    for name in [*state["values"], *state["arrays"]]:
        if not isinstance(name, str) or not name.endswith("_") or name.startswith("_"):
            raise damaged(f"names {name!r}, which is not a learned attribute (those end in '_')")
    for name, kind in state["arrays"].items():
        if kind not in ("tensor", "array") and not (isinstance(kind, dict) and isinstance(kind.get("module"), dict)):
            raise damaged(f"gives {name!r} the kind {kind!r}; expected 'tensor', 'array' or a module")
    for name, value in arrays.items():
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            raise damaged(f"holds NaN or infinite weights in {name!r}")


METHODS: Registry[FewShotClassifier] = Registry("method")
