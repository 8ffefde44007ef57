"""Issue 21: a suite bench (a list of datasets, or `coop`) into one folder, with the papers' Average table,
the shift table and the average plot, all rebuilt by `report` from results.jsonl alone."""
import numpy as np
import pytest

from crossgate.results import read_rows
from tests.conftest import make_folder, run, run_error
from tests.test_shift_sets import data_root  # noqa: F401  (the fixture: a 3-class ImageNet and its shift sets)


@pytest.fixture
def suite(tmp_path, data_root):  # noqa: F811
    make_folder(tmp_path / "a")
    make_folder(tmp_path / "b", classes=("red_fox", "barn_owl"))
    datasets = f"imagenet,imagefolder:{tmp_path / 'a'},imagefolder:{tmp_path / 'b'},stanford_cars"
    argv = ["bench", "--dataset", datasets, "--backbone", "tiny-clip", "--shots", "1,2", "--seeds", "1,2",
            "--methods", "zeroshot,logreg", "--jobs", "1", "--no-progress", "--data-root", str(data_root),
            "--cache-dir", str(data_root / "cache"), "--out", str(tmp_path / "run"), "--offline", "--shift", "all"]
    return tmp_path / "run", argv


def test_a_suite_says_what_is_missing_runs_the_rest_and_prints_the_average_and_shift_tables(capsys, suite):
    out, argv = suite
    code, printed, err = run(capsys, *argv)
    assert code == 0, err
    assert "3 of 4 datasets available" in printed and "  stanford_cars: stanford_cars is missing" in printed
    rows = read_rows(out / "results.jsonl")
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    assert len(datasets) == 3 and datasets[0] == "imagenet"
    assert {r.get("eval_set") for r in rows if r["dataset"] != "imagenet"} == {None}  # shifts: ImageNet's only
    summary = (out / "summary.md").read_text()
    assert "## Average over datasets" in summary and "## Shift sets" in summary
    for shots in (1, 2):  # Average = the mean over the datasets of the seed means, computed here by hand
        for method in ("zeroshot", "logreg"):
            seed_means = [np.mean([r["acc_test"] for r in rows if r["dataset"] == d and r["method"] == method
                                   and r["shots"] == shots and r.get("eval_set") is None]) for d in datasets]
            block = summary.split(f"### {shots}-shot · tiny-clip · test accuracy")[1].split("###")[0]
            line = next(ln for ln in block.splitlines() if ln.startswith(f"| {method} |"))
            cells = [c.strip() for c in line.split("|")[2:-1]]
            assert cells == [f"{m:.1f}" for m in seed_means] + [f"{np.mean(seed_means):.1f}"]
            assert f"| {method} |" in printed
    csv = (out / "summary.csv").read_text()
    assert any(line.startswith("Average,tiny-clip,logreg,2,") for line in csv.splitlines())
    plots = sorted(p.name for p in out.glob("accuracy_vs_shots__average-over-datasets__tiny-clip.*"))
    assert [p.rsplit(".", 1)[1] for p in plots] == ["pdf", "png", "svg"]
    # report rebuilds every table and plot from results.jsonl alone
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name.startswith(("summary", "accuracy"))}
    for name in before:
        (out / name).unlink()
    assert run(capsys, "report", str(out))[0] == 0
    assert (out / "summary.md").read_bytes() == before["summary.md"]
    assert (out / "summary.csv").read_bytes() == before["summary.csv"]
    assert set(before) <= {p.name for p in out.iterdir()}
    assert run(capsys, *argv)[0] == 0 and read_rows(out / "results.jsonl") == rows  # resume: nothing to do


def test_coop_names_the_eleven_registered_datasets_and_a_bad_list_is_one_line(capsys, tmp_path):
    from crossgate.cli import dataset_names

    assert dataset_names("coop") == ["oxford_pets", "food101", "caltech101", "oxford_flowers", "stanford_cars", "dtd",
                                     "eurosat", "sun397", "ucf101", "imagenet", "fgvc_aircraft"]
    assert "different names" in run_error(capsys, "bench", "--dataset", "dtd,dtd", "--offline")
    assert "takes one dataset" in run_error(capsys, "train", "--dataset", "dtd,eurosat", "--out", str(tmp_path / "m"))
    message = run_error(capsys, "bench", "--dataset", "coop", "--offline", "--data-root", str(tmp_path / "empty"),
                        "--out", str(tmp_path / "run"), "--no-progress")
    assert "none of the datasets" in message
