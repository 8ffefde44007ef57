"""The robustness benchmark: deterministic image and prompt corruptions, heads that consult corrupted
prompts, one results row per corruption and severity, and the robustness tables."""
import numpy as np
import pytest
from PIL import Image

from crossgate.cache import TextFeatures
from crossgate.cli import main
from crossgate.corruptions import ALL, IMAGE_CORRUPTIONS, Corruption, corrupt_image, corrupt_prompts, parse_specs
from crossgate.errors import UserError
from crossgate.methods import create_method, list_methods
from crossgate.results import read_rows
from tests.conftest import blobs, make_folder, run_error


def test_specs():
    assert parse_specs("gaussian_noise:1-3,typos") == (Corruption("gaussian_noise", 1), Corruption("gaussian_noise", 2),
                                                       Corruption("gaussian_noise", 3), Corruption("typos", 3))
    assert len(parse_specs("all:5")) == len(ALL) and len(parse_specs("all:1-5")) == 5 * len(ALL)
    for bad, message in [("fog:2", "unknown corruption 'fog'"), ("blur:0", "severities run from 1 to 5"),
                         ("blur:6", "severities run from 1 to 5"), ("blur:x", "bad severity"), (",", "at least one")]:
        with pytest.raises(UserError, match=message):
            parse_specs(bad)


def test_bad_corrupt_flag_is_a_one_line_error(capsys):
    assert "unknown corruption 'fog'" in run_error(capsys, "bench", "--corrupt", "fog")


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(0)
    gradient = np.linspace(0, 255, 64)[None, :, None] * np.ones((64, 1, 3))
    return Image.fromarray(np.clip(gradient + rng.normal(0, 10, (64, 64, 3)), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("name", IMAGE_CORRUPTIONS)
def test_image_corruptions_are_deterministic_and_grow_with_severity(photo, name):
    clean = np.asarray(photo, dtype=np.float64)
    change = []
    for severity in (1, 3, 5):
        c = Corruption(name, severity)
        out = corrupt_image(photo, c, seed=0, position=7)
        assert out.mode == "RGB" and out.size == photo.size
        assert np.array_equal(np.asarray(out), np.asarray(corrupt_image(photo, c, seed=0, position=7)))
        change.append(np.abs(np.asarray(out, dtype=np.float64) - clean).mean())
    assert change[0] > 0 and change[0] < change[2], change
    if name in ("gaussian_noise", "occlusion"):  # random draws depend on the seed and the image
        c = Corruption(name, 3)
        base = np.asarray(corrupt_image(photo, c, 0, 7))
        assert not np.array_equal(base, np.asarray(corrupt_image(photo, c, 1, 7)))
        assert not np.array_equal(base, np.asarray(corrupt_image(photo, c, 0, 8)))


def test_occlusion_covers_the_stated_share(photo):
    out = np.asarray(corrupt_image(photo, Corruption("occlusion", 2), 0, 0))
    grey = np.all(out == 128, axis=2) | np.all(out == 127, axis=2)
    assert abs(grey.mean() - 0.2) < 0.03


def test_prompt_corruptions():
    texts = ["a photo of a golden retriever, a type of pet."] * 20 + ["a photo of a tabby cat, a type of pet."] * 20
    labels = np.repeat([0, 1], 20)
    typo, typo_labels = corrupt_prompts(texts, labels, ["a photo of a {}."], Corruption("typos", 3), 0)
    assert typo != texts and np.array_equal(typo_labels, labels) and len(typo) == len(texts)
    assert typo == corrupt_prompts(texts, labels, ["{}"], Corruption("typos", 3), 0)[0]
    dropped, _ = corrupt_prompts(texts, labels, ["{}"], Corruption("drop_words", 5), 0)
    assert sum(len(t.split()) for t in dropped) < 0.7 * sum(len(t.split()) for t in texts)
    assert all(t.strip() for t in dropped)
    pool, pool_labels = corrupt_prompts(texts, labels, ["a photo of a {}."], Corruption("distractors", 1), 0)
    assert pool[:40] == texts and len(pool) == 48 and (pool_labels[40:] == -1).all()
    assert all(t.startswith("a photo of a ") for t in pool[40:])


@pytest.mark.parametrize("method", list_methods())
def test_consulting_the_same_prompts_changes_nothing(method):
    x, y, text = blobs()
    xt, _, _ = blobs(per_class=10, seed=2)
    clf = create_method(method, random_state=0).fit(x, y, text=text, val=blobs(seed=1)[:2])
    before = clf.predict_proba(xt)
    np.testing.assert_allclose(clf.with_text(text).predict_proba(xt), before, atol=1e-6)
    noisy = TextFeatures(x=text.x[::-1].copy(), native=text.native[::-1].copy(), labels=text.labels[::-1].copy(),
                         texts=text.texts[::-1])
    clf.with_text(noisy).predict_proba(xt)
    np.testing.assert_array_equal(clf.predict_proba(xt), before)  # the original is untouched


def test_distractor_texts_of_no_class_are_handled(monkeypatch):
    x, y, text = blobs()
    extra = np.random.default_rng(5).normal(size=(3, x.shape[1])).astype(np.float32)
    noisy = TextFeatures(x=np.concatenate([text.x, extra]), native=np.concatenate([text.native, extra]),
                         labels=np.concatenate([text.labels, [-1, -1, -1]]), texts=text.texts + ["d1", "d2", "d3"])
    for method in ("zeroshot", "tip", "gate", "gate-joint"):
        clf = create_method(method, random_state=0).fit(x, y, text=text)
        proba = clf.with_text(noisy).predict_proba(x)
        assert proba.shape == (len(x), 4) and np.isfinite(proba).all()


def test_bench_writes_a_row_per_corruption_and_a_robustness_table(tmp_path):
    make_folder(tmp_path / "imgs")
    argv = ["bench", "--dataset", f"imagefolder:{tmp_path / 'imgs'}", "--backbone", "tiny-clip", "--shots", "2",
            "--seeds", "1,2", "--methods", "zeroshot,logreg,gate-joint", "--out", str(tmp_path / "run"),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--jobs", "1"]
    assert main(argv) == 0
    assert main([*argv, "--corrupt", "gaussian_noise:1-2,typos:2"]) == 0  # adds the corrupted rows only
    rows = read_rows(tmp_path / "run" / "results.jsonl")
    assert len(rows) == 3 * 2 * 4
    keys = [(r["method"], r["seed"], r.get("corruption"), r.get("severity")) for r in rows]
    assert len(set(keys)) == len(keys)
    noisy = [r for r in rows if r.get("corruption") == "gaussian_noise"]
    assert {r["severity"] for r in noisy} == {1, 2} and all("acc_clean" in r for r in noisy)
    gate = [r for r in rows if r["method"] == "gate-joint" and r.get("corruption")]
    assert all(0 <= r["gate_top1_shift"] <= 100 for r in gate)
    logreg_typos = [r for r in rows if r["method"] == "logreg" and r.get("corruption") == "typos"]
    assert all(r["acc_test"] == r["acc_clean"] for r in logreg_typos)  # reads no text at prediction time
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "## Robustness" in summary
    assert "| method | clean (same images) | gaussian_noise:1 | gaussian_noise:2 | typos:2 |" in summary
    assert "top-1 selected text changed" in summary


def test_robustness_clean_column_is_the_corrupted_images_own():
    """The clean column compares the same images as the corrupted ones (issue 23): a method that reads no
    text shows the same number under text corruptions, not the whole test set's."""
    from crossgate.report import robustness_markdown, summary_csv

    rows = []
    for seed, (whole, subset) in enumerate([(42.9, 42.3), (43.1, 42.5)], 1):
        base = {"dataset": "d", "backbone": "b", "method": "linear", "shots": 1, "seed": seed}
        rows.append({**base, "acc_test": whole})
        rows.append({**base, "corruption": "typos", "severity": 3, "acc_test": subset, "acc_clean": subset})
        rows.append({**base, "corruption": "blur", "severity": 3, "acc_test": subset - 10, "acc_clean": subset})
    table = robustness_markdown(rows)
    assert "| clean (same images) | typos:3 | blur:3 |" in table and "| linear | 42.4 | 42.4 | 32.4 |" in table
    assert "d,b,linear,1,2,42.4000,0.1414,,clean:corrupted-images" in summary_csv(rows)


@pytest.mark.parametrize("method", ["logreg", "gate-joint"])
def test_corruption_rows_from_the_clean_scores_of_the_fit_equal_rows_scored_afresh(tmp_path, method):
    """bench hands the fit's clean test predictions to the robustness rows (one pass less); the rows are the
    same as when every image is scored again."""
    from crossgate.bench import corruption_rows
    from crossgate.pipeline import fit_scored, load_features
    from crossgate.settings import Settings

    make_folder(tmp_path / "imgs")
    corruptions = parse_specs("gaussian_noise:2,typos:2")
    _, _, feats = load_features(f"imagefolder:{tmp_path / 'imgs'}", "tiny-clip",
                                Settings(cache_dir=tmp_path / "cache", progress=False), corrupt=corruptions,
                                corrupt_per_class=2)
    assert feats.corrupted_rows is not None
    clf, row, test = fit_scored(feats, method, 2, 1)
    assert row["acc_test"] == round(100 * clf.score(feats.test.x, feats.test.labels), 4)
    assert corruption_rows(clf, feats, row, corruptions, test) == corruption_rows(clf, feats, row, corruptions)
    assert corruption_rows(clf, feats, row, ()) == []
