"""--protocol base2new (CoCoOp's): the first ceil(C/2) classes are base; methods fit on them and name the new
classes from text (zero-shot; GDA's synthesised means, mrflogs/ICLR24 main_base2new.py)."""
import json

import numpy as np
import pytest

from crossgate.cache import DatasetFeatures
from crossgate.features import ImageFeatures, TextFeatures
from crossgate.methods import create_method, new_class_methods
from crossgate.methods.gda import new_class_head
from crossgate.pipeline import base_class_count, fit_base_to_new, harmonic_mean
from tests.conftest import run, run_error


def _features(n_classes=5, dim=12, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def split(per_class):
        labels = np.repeat(np.arange(n_classes), per_class)
        return ImageFeatures(x=(centres[labels] + 0.6 * rng.normal(size=(len(labels), dim))).astype(np.float32),
                             labels=labels)

    text_x = (np.repeat(centres, 2, axis=0) + 0.4 * rng.normal(size=(2 * n_classes, dim))).astype(np.float32)
    text = TextFeatures(x=text_x, native=text_x, labels=np.repeat(np.arange(n_classes), 2),
                        texts=[f"t{i}" for i in range(2 * n_classes)])
    return DatasetFeatures(train=split(10), val=split(4), test=split(20), text=text,
                           classnames=[f"c{i}" for i in range(n_classes)])


def _unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def test_split_and_harmonic_mean_by_hand():
    assert [base_class_count(c) for c in (2, 5, 10, 101)] == [1, 3, 5, 51]
    feats = _features()
    _, row = fit_base_to_new(feats, "zeroshot", shots=2, seed=1)
    means = np.stack([_unit(_unit(feats.text.x)[feats.text.labels == c].mean(0)) for c in range(5)])
    x, y = _unit(feats.test.x), feats.test.labels
    base, new = y < 3, y >= 3
    acc_base = 100 * np.mean((x[base] @ means[:3].T).argmax(1) == y[base])
    acc_new = 100 * np.mean((x[new] @ means[3:].T).argmax(1) + 3 == y[new])
    assert row["acc_base"] == pytest.approx(acc_base, abs=1e-3) and row["acc_new"] == pytest.approx(acc_new, abs=1e-3)
    assert row["acc_test"] == pytest.approx(2 * acc_base * acc_new / (acc_base + acc_new), abs=1e-3)
    assert row["n_base_classes"] == 3 and row["n_test_base"] == 60 and row["n_test_new"] == 40
    assert row["n_train"] == 6  # two shots of the three base classes only
    assert harmonic_mean(0.0, 0.0) == 0.0


def _official_new_head(vecs, words, k=64):
    """main_base2new.py's synthesis, written out as its loop reads (numpy, float64)."""
    d = vecs.shape[1]
    k = min(k, len(vecs))
    mus, precs = [], []
    for w in words:
        top = vecs[np.argsort(-(w @ vecs.T), kind="stable")[:k]]
        mus.append(np.concatenate([top, np.repeat(w[None], 16, 0)]).mean(0))
        cov = (top - w).T @ (top - w) / (k - 1)
        precs.append(d * np.linalg.pinv((k - 1) * cov + np.trace(cov) * np.eye(d)))
    mu, prec = np.stack(mus), np.mean(precs, axis=0)
    w_new = mu @ prec
    b_new = np.log(1.0 / len(words)) - 0.5 * np.einsum("nd,dc,nc->n", mu, prec, mu)
    return w_new, b_new


def test_gda_new_class_head_is_main_base2new_s():
    rng = np.random.default_rng(3)
    vecs = _unit(rng.normal(size=(80, 10)))
    words = _unit(rng.normal(size=(4, 10)))
    w, b = new_class_head(vecs, words)
    w_ref, b_ref = _official_new_head(vecs, words)
    np.testing.assert_allclose(w, w_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(b, b_ref, rtol=1e-6, atol=1e-6)


def test_gda_base_to_new_scores_new_classes_with_the_synthesised_head():
    feats = _features()
    clf, row = fit_base_to_new(feats, "gda", shots=8, seed=1)
    assert 0 <= row["acc_new"] <= 100 and row["acc_base"] > 60
    assert clf.n_classes_ == 3


def test_class_mean_covariance_is_the_pinv_of_the_mean_class_covariance():
    from crossgate.methods.gda import gda_head

    rng = np.random.default_rng(4)
    x, y = _unit(rng.normal(size=(30, 6))), np.repeat(np.arange(3), 10)
    mus = np.stack([x[y == c].mean(0) for c in range(3)])
    prec = np.linalg.pinv(np.mean([np.cov(x[y == c].T) for c in range(3)], axis=0))
    w, b = gda_head(x, y, 3, covariance="class-mean")
    np.testing.assert_allclose(w, mus @ prec, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(b, np.log(1 / 3) - 0.5 * np.einsum("nd,dc,nc->n", mus, prec, mus), rtol=1e-6, atol=1e-6)


def test_methods_that_cannot_name_new_classes_are_refused():
    assert set(new_class_methods()) == {"zeroshot", "gda"}
    with pytest.raises(ValueError, match="names unseen classes"):
        fit_base_to_new(_features(), "logreg", shots=2, seed=1)
    assert create_method("logreg").names_new_classes is False


def test_bench_base_to_new_leaves_out_what_does_not_apply_and_tables_it(capsys, tmp_path):
    out = tmp_path / "b"
    args = ["bench", "--backbone", "tiny-clip", "--protocol", "base2new", "--shots", "2", "--seeds", "1,2",
            "--corrupt", "none", "--out", str(out), "--cache-dir", str(tmp_path / "c"), "--jobs", "1"]
    code, printed, _ = run(capsys, *args, "--methods", "zeroshot,gda,logreg")
    assert code == 0 and "not applicable" in printed and "left out: logreg" in printed
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["method"] for r in rows} == {"zeroshot", "gda"} and {r["protocol"] for r in rows} == {"base2new"}
    summary = (out / "summary.md").read_text()
    assert "## Base-to-new" in summary and "| gda | 2 |" in summary and "Not applicable" in summary
    assert "base2new:hm" in (out / "summary.csv").read_text()
    few_shot = ["bench", "--backbone", "tiny-clip", "--shots", "2", "--seeds", "1", "--corrupt", "none", "--out",
                str(out), "--cache-dir", str(tmp_path / "c"), "--methods", "zeroshot"]
    assert "protocol = 'base2new', not 'few-shot'" in run_error(capsys, *few_shot)  # never mixed in one folder
    assert "--corrupt" in run_error(capsys, *args, "--corrupt", "gaussian_noise")
