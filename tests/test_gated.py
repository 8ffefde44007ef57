"""gate-joint as a validation-checked residual on the best base; the paper's gate's diagnostics; paired
differences on the same draws."""
import numpy as np
import pytest

from crossgate.errors import UserError
from crossgate.methods import create_method
from tests.conftest import blobs


def test_gate_joint_starts_from_its_base_and_keeps_only_what_validation_confirms():
    from crossgate.methods.gate import JointConfig

    x, y, text = blobs(spread=0.9)
    xv, yv, _ = blobs(seed=1, spread=0.9)
    clf = create_method("gate-joint", random_state=0).fit(x, y, text=text, val=(xv, yv))
    assert clf.chosen_["base"] in ("ensemble", "logreg")
    base_val = (clf._base_logits(xv).argmax(1).numpy() == yv).mean()
    assert clf.score(xv, yv) >= base_val  # the base alone is step 0 of the checkpoint search
    # with no training steps left to it, gate-joint is exactly its base: the residual starts at zero
    still = create_method("gate-joint", config=JointConfig(steps=1, lr=1e-12, candidates=("logreg",)),
                          random_state=0).fit(x, y, text=text, val=(xv, yv))
    logits = still.bases_["logreg"]._logits(x).astype(np.float64)
    logits -= logits.mean(1, keepdims=True)
    reference = still.bases_["logreg"]._logits(np.concatenate([x, xv])).astype(np.float64)
    reference -= reference.mean(1, keepdims=True)
    np.testing.assert_allclose(still._logits(x), logits / np.sqrt((reference ** 2).mean()), atol=1e-4)


def test_gate_joint_ensemble_is_the_mean_of_base_logits_each_divided_by_its_own_scale():
    import torch

    from crossgate.methods.gate import JointConfig

    x, y, text = blobs()
    xv, yv, _ = blobs(seed=1)
    clf = create_method("gate-joint", config=JointConfig(candidates=("ensemble",), steps=1),
                        random_state=0).fit(x, y, text=text, val=(xv, yv))
    reference = np.concatenate([x, xv])

    def centred(z):
        return z - z.mean(1, keepdims=True)

    def rms(z):
        return np.sqrt((centred(z) ** 2).mean())

    mean = np.mean([centred(b._logits(x).astype(np.float64)) / rms(b._logits(reference).astype(np.float64))
                    for b in clf.bases_.values()], axis=0)
    ref_mean = np.mean([centred(b._logits(reference).astype(np.float64)) / rms(b._logits(reference).astype(np.float64))
                        for b in clf.bases_.values()], axis=0)
    np.testing.assert_allclose(clf._base_logits(x).numpy(), mean / rms(ref_mean), rtol=1e-4, atol=1e-5)
    assert isinstance(clf._base_logits(x), torch.Tensor)


def test_gate_joint_ensemble_keeps_each_images_confidence_with_two_classes():
    """Scaling each row to unit deviation made every two-class row ±1 (the ensemble a majority vote); one
    scale per base keeps each image's margin, so a base counts more where it is sure."""
    from crossgate.methods.gate import JointConfig

    x, y, text = blobs(n_classes=2, spread=0.8)
    clf = create_method("gate-joint", config=JointConfig(candidates=("ensemble",), steps=1),
                        random_state=0).fit(x, y, text=text)
    margins = np.abs(np.diff(clf._base_logits(x).numpy(), axis=1))
    assert margins.std() > 0.1 * margins.mean()  # not one magnitude for every image


def test_gate_joint_refuses_unknown_bases_and_candidates():
    from crossgate.methods.gate import JointConfig

    x, y, text = blobs()
    with pytest.raises(UserError, match="--gate-joint-bases"):
        create_method("gate-joint", config=JointConfig(bases=("nope",))).fit(x, y, text=text)
    with pytest.raises(UserError, match="--gate-joint-candidates"):
        create_method("gate-joint", config=JointConfig(candidates=("lpp",), bases=("logreg",))).fit(x, y, text=text)


def test_gate_selection_stats_count_distinct_top1_texts_and_attention_entropy():
    x, y, text = blobs()
    clf = create_method("gate", random_state=0).fit(x, y, text=text)
    indices, weights = clf.explain(x)
    stats = clf.selection_stats(x)
    assert stats["gate_top1_distinct"] == len(set(indices[:, 0].tolist())) <= stats["gate_pool_size"] == 8
    w = weights.astype(np.float64)
    assert stats["gate_attention_entropy"] == pytest.approx(np.mean([-(r * np.log(r)).sum() for r in w]), abs=1e-4)
    assert 0 <= stats["gate_attention_entropy"] <= np.log(stats["gate_k"]) + 1e-6


def test_paired_differences_are_per_seed_against_the_best_other_mean():
    from crossgate.report import paired_differences, paired_markdown

    def row(method, shots, seed, acc):
        return {"dataset": "d", "backbone": "b", "method": method, "shots": shots, "seed": seed, "acc_test": acc}

    rows = [row("gate-joint", 4, 1, 80.0), row("gate-joint", 4, 2, 70.0),
            row("lpp", 4, 1, 78.0), row("lpp", 4, 2, 74.0),  # mean 76: the best other
            row("zeroshot", 4, 1, 60.0), row("zeroshot", 4, 2, 60.0)]
    d = paired_differences(rows)[("d", "b")][4]
    assert d["best_other"] == "lpp" and d["diffs"] == [2.0, -4.0]
    assert d["mean"] == pytest.approx(-1.0) and d["std"] == pytest.approx(np.std([2.0, -4.0], ddof=1))
    assert "s1: +2.0, s2: -4.0" in paired_markdown(rows)


def test_gate_joint_consults_a_corrupted_prompt_pool_with_texts_of_no_class():
    from dataclasses import replace

    x, y, text = blobs()
    clf = create_method("gate-joint", random_state=0).fit(x, y, text=text)
    labels = text.labels.copy()
    labels[[1, 4]] = -1  # distractor prompts, as the robustness benchmark's prompt corruptions add
    noisy = replace(text, labels=labels)
    proba = clf.with_text(noisy).predict_proba(x)
    assert np.isfinite(proba).all() and np.allclose(proba.sum(1), 1, atol=1e-5)


@pytest.mark.parametrize("method", ["gate", "gate-joint"])
def test_predict_explain_is_predict_and_explain_from_one_pass(method):
    x, y, text = blobs()
    xv, yv, _ = blobs(seed=1)
    clf = create_method(method, random_state=0).fit(x, y, text=text, val=(xv, yv))
    pred, indices, weights = clf.predict_explain(xv)
    np.testing.assert_array_equal(pred, clf.predict(xv))
    np.testing.assert_array_equal(indices, clf.explain(xv)[0])
    np.testing.assert_array_equal(weights, clf.explain(xv)[1])
    assert clf.selection_stats_of(indices, weights, yv) == clf.selection_stats(xv, yv)
