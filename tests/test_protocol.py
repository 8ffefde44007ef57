"""Every method under one protocol on real lite features: above chance, no test data in selection."""
from dataclasses import replace

import numpy as np
import pytest

from crossgate.cache import ImageFeatures
from crossgate.methods import list_methods
from crossgate.methods.probe import ProbeSearch, search_probe
from crossgate.pipeline import fit_one

FAST_PROBE = ProbeSearch(iterations=1_500)


def fast(method):
    return FAST_PROBE if method in ("linear", "crossmodal") else None


@pytest.fixture(scope="module")
def runs(lite_small_features):
    return {m: fit_one(lite_small_features, m, shots=4, seed=1, config=fast(m))[1] for m in list_methods()}


@pytest.mark.parametrize("method", list_methods())
def test_every_method_beats_chance(runs, method):
    # 10 classes: chance is 10%; 300 test images, so 16% is over two standard errors above it
    assert runs[method]["acc_test"] > 16.0, runs[method]


def test_crossmodal_one_shot_not_worse_than_zeroshot(lite_small_features):
    zs = fit_one(lite_small_features, "zeroshot", shots=1, seed=1)[1]["acc_test"]
    for seed in (1, 2):
        row = fit_one(lite_small_features, "crossmodal", shots=1, seed=seed, config=FAST_PROBE)[1]
        assert row["acc_test"] >= zs - 3.0


def test_scrambled_test_labels_change_no_validation_choice(lite_small_features, runs):
    feats = lite_small_features
    scrambled = replace(feats, test=ImageFeatures(
        x=feats.test.x, labels=np.random.default_rng(0).permutation(feats.test.labels)))
    for method in list_methods():
        again = fit_one(scrambled, method, shots=4, seed=1, config=fast(method))[1]
        assert again["hparams"] == runs[method]["hparams"], method
        assert again["acc_val"] == runs[method]["acc_val"] and again["acc_train"] == runs[method]["acc_train"]
    assert again["acc_test"] != runs[method]["acc_test"]  # the scramble did reach the test split


def test_probe_search_early_stop_keeps_the_choice(lite_small_features):
    """Patience stops a setting only after its validation accuracy has not improved for a while; on this
    data the chosen setting and checkpoint equal those of the full schedule."""
    f = lite_small_features
    x, y, xv, yv = f.train.x[:40], f.train.labels[:40], f.val.x, f.val.labels
    init = f.text.class_means()
    full = search_probe(x, y, f.text.x, f.text.labels, xv, yv, init, replace(FAST_PROBE, patience=None), 1)
    early = search_probe(x, y, f.text.x, f.text.labels, xv, yv, init, replace(FAST_PROBE, patience=5), 1)
    assert (early.setting, early.step) == (full.setting, full.step)
    assert early.steps_run <= full.steps_run


def test_batched_search_equals_settings_run_one_at_a_time(lite_small_features):
    f = lite_small_features
    args = (f.train.x, f.train.labels, f.text.x, f.text.labels, f.val.x, f.val.labels, f.text.class_means())
    search = ProbeSearch(iterations=300, patience=None)
    batched = search_probe(*args, search, seed=3)
    # every setting has its own random stream, so the chosen setting trained alone is the same model
    alone = search_probe(*args, search, seed=3, settings=[batched.setting])
    assert (alone.setting, alone.step) == (batched.setting, batched.step)
    np.testing.assert_allclose(alone.weights, batched.weights, atol=1e-3)  # float reassociation only
