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


def test_lin_batch_size_rule():
    """Lin et al. train a batch size only if its text half < texts and its image half < images."""
    from crossgate.methods.probe import valid_batch_sizes

    assert valid_batch_sizes((8, 32), n_images=10, n_texts=40) == [8]  # 1 shot, 10 classes: 16 images >= 10
    assert valid_batch_sizes((8, 32), n_images=160, n_texts=10) == [8]  # EuroSAT: 10 texts, 16-text halves
    assert valid_batch_sizes((8, 32), n_images=160, n_texts=0) == [8, 32]  # image-only: 32 < 160
    assert valid_batch_sizes((8, 32), n_images=32, n_texts=0) == [8]
    assert valid_batch_sizes((8, 32), n_images=3, n_texts=2) == [8]  # nothing fits: the smallest, not nothing


def test_lin_learning_rate_schedule():
    """scheduler.py: 1e-5 at update 1, base·(k-1)/50 for k ≤ 50, then cosine that does not reach 0."""
    from crossgate.methods.probe import lr_at

    base = 1e-3
    rates = [base * f + a for f, a in (lr_at(k, 50, 12_800) for k in range(1, 12_801))]
    assert rates[0] == 1e-5 and rates[1] == pytest.approx(base / 50) and rates[49] == pytest.approx(base * 49 / 50)
    assert rates[50] == pytest.approx(base)  # update 51: the cosine's first value
    assert rates[51] == pytest.approx(base * 0.5 * (1 + np.cos(np.pi / 12_800)))
    assert 0 < rates[-1] < 1e-3 * base and all(a >= b for a, b in zip(rates[50:], rates[51:], strict=False))


def test_lin_validation_points_include_update_one(lite_small_features):
    """Validation after updates 1, 1 + eval_every, ...: the near-zero-shot head is a candidate."""
    f = lite_small_features
    search = ProbeSearch(iterations=45, eval_every=10, lrs=(1e-3,), weight_decays=(0.0,), batch_sizes=(8,))
    result = search_probe(f.train.x, f.train.labels, f.text.x, f.text.labels, f.val.x, f.val.labels,
                          f.text.raw_class_means(), search, seed=1)
    assert result.step in (1, 11, 21, 31, 41)


def test_crossmodal_init_averages_raw_template_features_then_normalises():
    from crossgate.features import TextFeatures, unit_rows
    from crossgate.methods.probe import CrossModalProbe

    x = np.array([[3.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    text = TextFeatures(x=x, native=x, labels=np.array([0, 0, 1, 1]), texts=list("abcd"))
    init = CrossModalProbe()._init(text, 2, 0)
    np.testing.assert_allclose(init, unit_rows(np.array([[1.5, 0.5], [1.0, 1.0]])), rtol=1e-6)
    assert not np.allclose(init[0], text.class_means()[0])  # the unit-template mean would differ
