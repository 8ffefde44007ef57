"""Contract tests run over every registered method, plus method-specific checks."""
import numpy as np
import pytest

from crossgate.errors import UserError
from crossgate.methods import create_method, list_methods
from tests.conftest import blobs


@pytest.fixture(params=list_methods())
def method(request):
    return request.param


def test_contract(method):
    x, y, text = blobs()
    xv, yv, _ = blobs(seed=1)
    xt, yt, _ = blobs(per_class=50, seed=2)
    clf = create_method(method, random_state=0)
    before = dict(vars(clf))
    assert clf.fit(x, y, text=text, val=(xv, yv)) is clf
    learned = set(vars(clf)) - set(before)
    assert learned and all(name.endswith("_") for name in learned)
    proba = clf.predict_proba(xt)
    assert proba.shape == (len(xt), 4) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert np.array_equal(clf.predict(xt), proba.argmax(1))
    assert clf.score(xt, yt) > 0.8  # well-separated clusters; chance is 0.25
    assert isinstance(clf.chosen_, dict) and set(clf.get_params()) >= {"random_state"}


def test_deterministic(method):
    x, y, text = blobs()
    a = create_method(method, random_state=3).fit(x, y, text=text, val=blobs(seed=1)[:2]).predict_proba(x)
    b = create_method(method, random_state=3).fit(x, y, text=text, val=blobs(seed=1)[:2]).predict_proba(x)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad, message", [
    (np.zeros(5), "Expected 2D array, got 1D array"),
    (np.full((32, 16), np.nan), "NaN or infinite"),
])
def test_bad_features(method, bad, message):
    _, y, text = blobs()
    with pytest.raises(UserError, match=message):
        create_method(method).fit(bad, y[: len(bad)], text=text)


def test_wrong_feature_size_at_predict(method):
    x, y, text = blobs()
    clf = create_method(method).fit(x, y, text=text)
    with pytest.raises(UserError, match=r"X has 3 features, but \w+ is expecting 16 features"):
        clf.predict(np.zeros((2, 3)))


def test_predict_before_fit(method):
    with pytest.raises(UserError, match="not fitted yet"):
        create_method(method).predict(np.zeros((2, 3)))


def test_zero_norm_features_do_not_divide_by_zero(method):
    x, y, text = blobs()
    clf = create_method(method).fit(x, y, text=text)
    assert np.isfinite(clf.predict_proba(np.zeros((3, 16), np.float32))).all()


def test_zeroshot_needs_text_and_ignores_image_labels():
    x, y, text = blobs()
    with pytest.raises(UserError, match="needs the class text features"):
        create_method("zeroshot").fit(x, y)
    a = create_method("zeroshot").fit(x, y, text=text).predict_proba(x)
    b = create_method("zeroshot").fit(x, np.roll(y, 3), text=text).predict_proba(x)
    np.testing.assert_array_equal(a, b)


def test_logreg_chooses_l2_on_validation():
    x, y, text = blobs(spread=1.0)
    from crossgate.methods.linear import LogRegConfig

    clf = create_method("logreg", config=LogRegConfig(l2_grid=(1e-4, 10.0))).fit(x, y, val=blobs(spread=1.0,
                                                                                               seed=5)[:2])
    assert clf.chosen_["l2"] in (1e-4, 10.0)
    assert create_method("logreg", config=LogRegConfig(l2_grid=(0.5,))).fit(x, y).chosen_ == {"l2": 0.5}


def test_gate_settings_the_text_pool_cannot_take_are_user_errors():
    from dataclasses import replace

    from crossgate.methods.gate import GateConfig, JointConfig

    x, y, text = blobs()
    short_native = replace(text, native=text.native[:, :8])  # an unaligned text tower, as lite's MiniLM
    for method, cfg in (("gate", GateConfig(text_space="native")), ("gate-joint", JointConfig(text_space="native"))):
        with pytest.raises(UserError, match="tied gate initialisation needs text features in image space"):
            create_method(method, config=cfg).fit(x, y, text=short_native)
    too_big = r"k=9 is larger than the number of texts N=8; use k <= 8 or 'all' \(--gate-k\)"
    with pytest.raises(UserError, match=too_big):
        create_method("gate", config=GateConfig(k=9)).fit(x, y, text=text)
    fitted = create_method("gate", config=GateConfig(text_space="native", init="default", epochs=2))
    assert fitted.fit(x, y, text=short_native).predict(x).shape == y.shape
