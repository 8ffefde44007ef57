"""--aug-views: deterministic augmented passes of the training images, cached once, used per method as its
official code does (GDA / ProKeR concatenate them, Tip-Adapter averages each image's keys)."""
import json

import numpy as np
import pytest
from PIL import Image

from crossgate import augment
from crossgate.cache import FeatureCache
from crossgate.methods import create_method
from crossgate.methods.gda import gda_head
from tests.conftest import CountingEncoder, blobs, run, run_error


def _photo(w=60, h=40, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_crop_is_a_random_resized_crop_and_the_same_for_the_same_key():
    image = _photo()
    a, b = augment.augment(image, 32, 0, (5, 1)), augment.augment(image, 32, 0, (5, 1))
    assert a.size == (32, 32) and np.array_equal(np.asarray(a), np.asarray(b))
    others = [augment.augment(image, 32, s, k) for s, k in ((0, (5, 2)), (0, (6, 1)), (1, (5, 1)))]
    assert all(not np.array_equal(np.asarray(a), np.asarray(o)) for o in others)
    for key in range(200):  # scale within (0.5, 1) of the area and aspect within (3/4, 4/3), inside the image
        left, top, w, h = augment.crop_box(np.random.default_rng([0, key, 0]), 60, 40)
        assert left >= 0 and top >= 0 and left + w <= 60 and top + h <= 40
        assert 0.5 - 0.03 <= w * h / 2400 <= 1.0 + 1e-9 and 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05


def test_flip_half_the_time():
    flips = [np.random.default_rng([0, k, 0]) for k in range(400)]
    drawn = []
    for rng in flips:
        augment.crop_box(rng, 60, 40)
        drawn.append(rng.random() < 0.5)
    assert 0.4 < np.mean(drawn) < 0.6


def test_views_are_cached_once_and_an_image_s_views_do_not_depend_on_the_others(tmp_path, tiny, embedded):
    counting = CountingEncoder(tiny)
    cache = FeatureCache(tmp_path, progress=False)
    views = cache.augmented_features(counting, embedded, np.array([3, 7, 11]), passes=2)
    assert views.shape == (2, 3, tiny.image_dim) and counting.images == 6
    assert not np.allclose(views[0], views[1])  # two passes, two crops
    counting.images = 0
    again = FeatureCache(tmp_path, progress=False).augmented_features(counting, embedded, np.array([3, 7, 11]), 2)
    assert counting.images == 0 and np.array_equal(views, again)
    other = cache.augmented_features(counting, embedded, np.array([7, 20]), 2)  # image 7 beside another
    np.testing.assert_allclose(other[:, 0], views[:, 1], atol=1e-5)
    centre = cache.image_features(tiny, embedded, "train").x[7]
    assert not np.allclose(views[0, 1], centre)


def test_gda_and_proker_use_the_passes_as_their_samples():
    x, y, text = blobs(per_class=3)
    views = np.stack([x + np.random.default_rng(p).normal(0, 0.05, x.shape).astype(np.float32) for p in range(3)])
    val = blobs(per_class=2, seed=5)[:2]
    with_views = create_method("gda").fit(x, y, text=text, val=val, views=(views, y))
    unit = views.reshape(-1, x.shape[1]) / np.linalg.norm(views.reshape(-1, x.shape[1]), axis=1, keepdims=True)
    w, b = gda_head(unit, np.tile(y, 3), 4)  # the closed form on the concatenated passes, as main_few_shots.py
    np.testing.assert_allclose(with_views.coef_, w, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(with_views.intercept_, b, rtol=1e-4, atol=1e-4)
    proker = create_method("proker").fit(x, y, text=text, val=val, views=(views, y))
    assert len(proker.support_) == 3 * len(x)


def test_tip_keys_are_the_mean_of_an_image_s_passes():
    x, y, text = blobs(per_class=3)
    views = np.stack([x * (1 + 0.1 * p) + p for p in range(3)]).astype(np.float32)
    clf = create_method("tip").fit(x, y, text=text, val=blobs(per_class=2, seed=5)[:2], views=(views, y))
    mean = views.mean(0)
    np.testing.assert_allclose(clf.keys_.numpy(), mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-6)


def test_bad_views_are_one_line_errors():
    x, y, text = blobs(per_class=3)
    gda = create_method("gda")
    with pytest.raises(ValueError, match=r"shape \(passes, n, 16\)"):
        gda.fit(x, y, text=text, views=(x, y))
    with pytest.raises(ValueError, match="views="):
        gda.fit(x, y, text=text, views=x[None])


def test_bench_records_the_views_uses_them_where_the_method_does_and_refuses_a_change(capsys, tmp_path):
    out = tmp_path / "b"
    args = ["bench", "--backbone", "tiny-clip", "--methods", "gda,logreg", "--shots", "1,2", "--seeds", "1",
            "--corrupt", "none", "--out", str(out), "--cache-dir", str(tmp_path / "c"), "--jobs", "1"]
    run(capsys, *args, "--aug-views", "2")
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["aug_views"] for r in rows} == {2}
    assert {r["method"]: r["aug_views_used"] for r in rows} == {"gda": 2, "logreg": 0}
    err = run_error(capsys, *args, "--shots", "4")
    assert "aug_views = 2" in err and "not 0" in err
