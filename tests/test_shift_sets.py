"""Issue 21, second part: ImageNet's shift sets, scored by `bench --shift` without refitting."""
import numpy as np
import pytest
from PIL import Image

from crossgate.errors import UserError
from crossgate.results import read_rows
from crossgate.settings import Settings
from tests.conftest import run, run_error
from tests.test_field_datasets import make_imagenet

WNIDS, NAMES = ("n01440764", "n01443537", "n01484850"), ("tench", "goldfish", "great white shark")


def make_shifts(root, a_classes=(0, 2)):
    """The four sets beside a 3-class ImageNet; -A and -R hold classes `a_classes` only."""
    classnames = "".join(f"{w} {n}\n" for w, n in zip(WNIDS, NAMES, strict=True))
    layouts = {"imagenetv2/imagenetv2-matched-frequency-format-val": [str(i) for i in range(3)],
               "imagenet-sketch/images": list(WNIDS),
               "imagenet-adversarial/imagenet-a": [WNIDS[i] for i in a_classes],
               "imagenet-rendition/imagenet-r": [WNIDS[i] for i in a_classes]}
    for images, folders in layouts.items():
        (root / images).parent.joinpath("classnames.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / images.split("/")[0] / "classnames.txt").write_text(classnames)
        for j, folder in enumerate(folders):
            (root / images / folder).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (24, 24), (90 * j, 30 * i, 60)).save(root / images / folder / f"{i}.jpg")


@pytest.fixture
def data_root(tmp_path):
    make_imagenet(tmp_path, WNIDS, NAMES)
    (tmp_path / "imagenet" / "classnames.txt").write_text("".join(f"{w} {n}\n" for w, n in zip(WNIDS, NAMES,
                                                                                               strict=True)))
    make_shifts(tmp_path)
    return tmp_path


def test_shift_sets_carry_imagenet_labels_and_their_classes(data_root):
    from crossgate.datasets import load_dataset

    settings = Settings(data_root=data_root, offline=True)
    v2 = load_dataset("imagenet_v2", settings)
    assert v2.classnames == list(NAMES) and list(v2.classes) == [0, 1, 2]
    assert list(v2.split("test").labels) == [0, 0, 1, 1, 2, 2]
    a = load_dataset("imagenet_a", settings)
    assert list(a.classes) == [0, 2] and list(a.split("test").labels) == [0, 0, 2, 2]
    with pytest.raises(UserError, match="test-only shift set"):
        a.split("train")


def test_a_restricted_score_equals_a_hand_computation(data_root):
    from crossgate.bench import shift_rows
    from crossgate.pipeline import fit_one, load_features

    settings = Settings(data_root=data_root, offline=True, cache_dir=data_root / "cache", progress=False)
    _, _, feats = load_features("imagenet", "tiny-clip", settings, shift=("imagenet_a", "imagenet_v2"))
    clf, row = fit_one(feats, "logreg", 1, 1)
    rows = {r["eval_set"]: r for r in shift_rows(clf, feats, row)}
    images, classes = feats.shifted["imagenet_a"]
    logits = clf.predict_proba(images.x)
    expected = []
    for p, y in zip(logits, images.labels, strict=True):  # argmax over the classes the set holds, one by one
        best = max(classes, key=lambda c: p[c])
        expected.append(best == y)
    assert rows["imagenet_a"]["acc_test"] == pytest.approx(100 * np.mean(expected))
    assert rows["imagenet_a"]["n_classes"] == 2 and rows["imagenet_v2"]["n_classes"] == 3
    v2, _ = feats.shifted["imagenet_v2"]
    assert rows["imagenet_v2"]["acc_test"] == pytest.approx(100 * clf.score(v2.x, v2.labels))


def test_bench_scores_every_shift_set_and_report_rebuilds_the_table(capsys, data_root):
    out = data_root / "run"
    argv = ["bench", "--dataset", "imagenet", "--backbone", "tiny-clip", "--shots", "1", "--seeds", "1,2",
            "--methods", "zeroshot,logreg", "--jobs", "1", "--no-progress", "--data-root", str(data_root),
            "--cache-dir", str(data_root / "cache"), "--out", str(out), "--offline", "--shift", "all"]
    code, printed, err = run(capsys, *argv)
    assert code == 0, err
    rows = read_rows(out / "results.jsonl")
    assert sorted({r.get("eval_set") for r in rows}, key=str) == sorted(
        [None, "imagenet_a", "imagenet_r", "imagenet_sketch", "imagenet_v2"], key=str)
    summary = (out / "summary.md").read_text()
    assert "## Shift sets" in summary and "shift mean" in summary
    for method in ("zeroshot", "logreg"):  # the shift mean is the mean over the four sets of their seed means
        means = [np.mean([r["acc_test"] for r in rows if r["method"] == method and r.get("eval_set") == s])
                 for s in ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r")]
        line = next(ln for ln in summary.splitlines() if ln.startswith(f"| {method} |") and ln.count("|") == 8)
        assert line.split("|")[-2].strip() == f"{np.mean(means):.1f}"
    assert "eval:imagenet_a" in (out / "summary.csv").read_text()
    # the main table holds only the dataset's own test split
    main = [r for r in rows if r.get("eval_set") is None]
    assert len(main) == 4
    (out / "summary.md").unlink()
    assert run(capsys, "report", str(out))[0] == 0 and "shift mean" in (out / "summary.md").read_text()
    assert run(capsys, *argv)[0] == 0 and read_rows(out / "results.jsonl") == rows  # resume: nothing to do


def test_a_shift_set_is_not_a_dataset_to_fit_and_needs_its_own_dataset(capsys, data_root):
    base = ["bench", "--backbone", "tiny-clip", "--shots", "1", "--seeds", "1", "--methods", "zeroshot",
            "--no-progress", "--data-root", str(data_root), "--cache-dir", str(data_root / "cache"), "--offline"]
    assert "test-only shift set" in run_error(capsys, *base, "--dataset", "imagenet_v2", "--out",
                                              str(data_root / "a"))
    assert "other classes" in run_error(capsys, *base, "--dataset", "fashion-mnist", "--shift", "imagenet_v2",
                                        "--out", str(data_root / "b"))
    assert "unknown shift set" in run_error(capsys, *base, "--shift", "imagenet_c")


def test_the_cli_knows_every_registered_shift_set_from_the_registry_alone():
    from crossgate.cli import registered, shift_list
    from crossgate.datasets import DATASETS
    from crossgate.datasets.imagenet_shifts import SHIFTS

    assert set(registered("shift")) == set(SHIFTS) and set(shift_list("all")) == set(SHIFTS)

    @DATASETS.register("imagenet_c_test", tags=("shift",))  # a new shift set is one registration, no CLI edit
    def _new(settings=None):
        raise AssertionError("not opened")

    try:
        assert shift_list("imagenet_c_test") == ("imagenet_c_test",) and "imagenet_c_test" in shift_list("all")
    finally:
        DATASETS.unregister("imagenet_c_test")


def test_the_plan_counts_the_shift_sets_images(capsys, data_root):
    import re

    from crossgate.datasets import load_dataset

    settings = Settings(data_root=data_root, offline=True)
    own = sum(len(load_dataset("imagenet", settings).split(s)) for s in ("train", "val", "test"))
    shifted = sum(len(load_dataset(n, settings).split("test")) for n in
                  ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"))
    code, printed, err = run(capsys, "bench", "--dataset", "imagenet", "--backbone", "tiny-clip", "--shots", "1",
                             "--seeds", "1", "--methods", "zeroshot", "--jobs", "1", "--no-progress",
                             "--data-root", str(data_root), "--cache-dir", str(data_root / "plan-cache"),
                             "--out", str(data_root / "plan"), "--offline", "--shift", "all")
    assert code == 0, err
    todo, total = re.search(r"([\d,]+) of ([\d,]+) images to encode", printed).groups()
    assert int(todo) == int(total) == own + shifted and shifted == 20
