"""scikit-learn's own estimator checks over every registered method.

Methods that read class texts get them from a thin adapter: per class, two "prompts" made from the class
mean of the training features (a stand-in for an encoder's text tower, which the checks cannot supply).
Everything else is the method's own code under scikit-learn's checks.
"""
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from crossgate.features import TextFeatures
from crossgate.methods import METHODS, create_method
from tests.conftest import blobs


def synthetic_text(x: np.ndarray, y: np.ndarray, n_classes: int) -> TextFeatures:
    """Five prompts per class (the gate's default k): its mean training feature, plus fixed perturbations."""
    rng = np.random.default_rng(0)
    means = np.stack([x[y == c].mean(0) if np.any(y == c) else np.zeros(x.shape[1]) for c in range(n_classes)])
    rows = np.concatenate([means] + [means + 0.1 * rng.standard_normal(means.shape) for _ in range(4)])
    rows = rows.astype(np.float32)
    labels = np.tile(np.arange(n_classes), 5)
    return TextFeatures(x=rows, native=rows, labels=labels, texts=[f"prompt {i}" for i in range(len(labels))])


# shorter schedules, so that ~55 checks x 14 methods run in a minute (the same code paths); the linear
# probe needs 2,000 of its 12,800 updates for the 0.83 training accuracy on blobs the checks ask
QUICK = {"linear": {"iterations": 2000, "eval_every": 200}, "crossmodal": {"iterations": 600, "eval_every": 60},
         "gate": {"epochs": 5, "head_epochs": 50}, "gate-joint": {"steps": 20},
         "clap": {"epochs": 30}, "taskres": {"epochs": 30}, "lpp": {"epochs": 50}}


def quick_config(name: str):
    cls = METHODS.factory(name).config_class
    return cls(**QUICK[name]) if name in QUICK else None


def with_text(name: str):
    """The method `name`; if it reads class texts, a subclass whose fit makes them from the training data."""
    cls = METHODS.factory(name)
    if not cls.uses_text:
        return cls(config=quick_config(name))

    class WithText(cls):
        def fit(self, x, y, **kwargs):
            from sklearn.utils.multiclass import check_classification_targets

            from crossgate.methods.base import check_features, check_labels

            x = check_features(x)
            y = check_labels(y, len(x))
            check_classification_targets(y)
            labels = np.unique(y)
            idx = np.searchsorted(labels, y)
            super().fit(x, idx, text=synthetic_text(x.astype(np.float32), idx, len(labels)), **kwargs)
            self.classes_ = labels
            return self

    WithText.__name__ = WithText.__qualname__ = f"{cls.__name__}WithText"
    globals()[WithText.__name__] = WithText  # pickled by name, as the checks do
    return WithText(config=quick_config(name))


@parametrize_with_checks([with_text(name) for name in METHODS.names()])
def test_scikit_learn_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("name", METHODS.names())
def test_clone_and_params_round_trip(name):
    clf = create_method(name, random_state=3)
    twin = clone(clf)
    assert type(twin) is type(clf) and twin.get_params() == clf.get_params()
    assert twin.set_params(random_state=4).random_state == 4


def test_model_selection_tools_work_with_and_without_text():
    """What the issue could not do: cross_val_score (text= as a fit parameter), Pipeline, GridSearchCV, and
    labels that are strings."""
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    means = rng.normal(size=(4, 16))
    y = np.repeat(np.arange(4), 20)
    x = (means[y] + 0.5 * rng.normal(size=(len(y), 16))).astype(np.float32)
    text = synthetic_text(x, y, 4)
    assert cross_val_score(create_method("tip"), x, y, params={"text": text}, cv=4).min() > 0.9
    assert cross_val_score(make_pipeline(StandardScaler(), create_method("logreg")), x, y, cv=4).min() > 0.9
    search = GridSearchCV(create_method("logreg"), {"random_state": [0, 1]}, cv=3).fit(x, y)
    assert search.best_params_ == {"random_state": 0}
    names = np.array(["ant", "bee", "cat", "dog"])
    clf = create_method("logreg").fit(x, names[y])
    assert list(clf.classes_) == list(names) and set(clf.predict(x)) <= set(names)


def test_config_fields_are_parameters_a_search_can_set():
    """GridSearchCV over a config field, by its name or as config__<field>; clone keeps a field set (issue 23)."""
    from sklearn.model_selection import GridSearchCV

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    y = np.repeat(np.arange(2), 20)
    x[y == 1] += 1.0
    clf = create_method("logreg")
    assert {"l2_grid", "max_iter", "config", "random_state", "device"} <= set(clf.get_params())
    for key in ("l2_grid", "config__l2_grid"):
        search = GridSearchCV(clf, {key: [(1e-4,), (10.0,)]}, cv=2).fit(x, y)
        assert set(search.best_params_) == {key}
    twin = clone(create_method("logreg", l2_grid=(1e-2,)))
    assert twin.l2_grid == (1e-2,) and twin._config().l2_grid == (1e-2,)
    assert create_method("logreg", l2_grid=(1e-2,)).effective_params()["config"].l2_grid == (1e-2,)
    with pytest.raises(TypeError, match="l2_grid"):
        create_method("logreg", l2_gird=(1e-2,))


def test_fit_without_val_says_where_it_chooses():
    x, y, _ = blobs()
    with pytest.warns(UserWarning, match="without val="):
        create_method("logreg").fit(x, y)
