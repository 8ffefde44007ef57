import numpy as np
import pytest

from crossgate.cli import main
from crossgate.datasets import load_dataset
from crossgate.errors import UserError
from crossgate.results import read_rows
from tests.conftest import make_folder


def test_stratified_split_and_class_names(tmp_path):
    ds = load_dataset(f"imagefolder:{make_folder(tmp_path)}")
    assert ds.classnames == ["golden retriever", "goldfish", "tabby cat"]
    sizes = {s: np.bincount(ds.split(s).labels).tolist() for s in ("train", "val", "test")}
    assert sizes == {"train": [6, 6, 6], "val": [2, 2, 2], "test": [2, 2, 2]}
    all_paths = [p for s in ("train", "val", "test") for p in ds.split(s).paths]
    assert len(set(all_paths)) == 30  # disjoint splits
    assert load_dataset(f"imagefolder:{tmp_path}").split("val").paths == ds.split("val").paths  # fixed seed


def test_presplit_layout_and_classnames_override(tmp_path):
    make_folder(tmp_path, presplit=True)
    (tmp_path / "classnames.txt").write_text("tabby_cat tabby\ngoldfish gold fish\n")
    ds = load_dataset(f"imagefolder:{tmp_path}")
    assert ds.classnames == ["golden retriever", "gold fish", "tabby"]
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [18, 6, 6]


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "does not exist"),
    (lambda p: (p / "only").mkdir(parents=True), "has 1 class folders"),
    (lambda p: [(p / c).mkdir(parents=True) for c in ("a", "b")], "class folders with no images"),
])
def test_bad_folders(tmp_path, setup, message):
    setup(tmp_path / "data")
    with pytest.raises(UserError, match=message):
        load_dataset(f"imagefolder:{tmp_path / 'data'}")


def test_duplicate_class_names_are_refused(tmp_path):
    make_folder(tmp_path, classes=("cat", "Cat_x"))
    (tmp_path / "classnames.txt").write_text("Cat_x cat\n")
    with pytest.raises(UserError, match="duplicate class names cat"):
        load_dataset(f"imagefolder:{tmp_path}")


def test_bench_runs_on_an_image_folder(tmp_path):
    make_folder(tmp_path / "imgs")
    assert main(["bench", "--dataset", f"imagefolder:{tmp_path / 'imgs'}", "--backbone", "tiny-clip",
                 "--shots", "2", "--seeds", "1", "--methods", "zeroshot,logreg,tip", "--out", str(tmp_path / "run"),
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--jobs", "1"]) == 0
    rows = read_rows(tmp_path / "run" / "results.jsonl")
    assert len(rows) == 3 and all(r["n_test"] == 6 and r["split_source"] == "crossgate-sampler" for r in rows)


def test_flip_doubles_training_images_and_a_changed_setup_does_not_resume(tmp_path, capsys):
    from tests.conftest import run_error

    make_folder(tmp_path / "imgs")
    argv = ["bench", "--dataset", f"imagefolder:{tmp_path / 'imgs'}", "--backbone", "tiny-clip", "--shots", "2",
            "--seeds", "1", "--methods", "logreg", "--out", str(tmp_path / "run"), "--cache-dir",
            str(tmp_path / "cache"), "--no-progress", "--jobs", "1"]
    assert main([*argv, "--flip"]) == 0
    row = read_rows(tmp_path / "run" / "results.jsonl")[0]
    assert row["n_train"] == 12 and row["train_views"] == ["center", "flip"]
    assert "train_views = ['center', 'flip'], not ['center']" in run_error(capsys, *argv)
    assert "templates = None" in run_error(capsys, *argv, "--flip", "--template", "a {} photo")
