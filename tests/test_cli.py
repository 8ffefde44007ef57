import json
import subprocess
import sys

import pytest

from crossgate.cli import main
from crossgate.methods import list_methods
from crossgate.results import read_rows
from tests.conftest import run, run_error


@pytest.mark.parametrize("argv, message", [
    (["bench", "--backbone", "resnet9000"], "unknown backbone 'resnet9000'; available: lite, tiny-clip"),
    (["bench", "--dataset", "imagenet-9000"], "unknown dataset 'imagenet-9000'; available: fashion-mnist"),
    (["bench", "--methods", "zeroshot,magic"], "unknown method 'magic'; available: zeroshot, linear"),
    (["bench", "--methods", ","], "expected 'all' or a comma-separated list of method names"),
    (["bench", "--shots", "0"], "expected a positive integer, got 0"),
    (["bench", "--shots", "-3"], "expected a positive integer, got -3"),
    (["bench", "--shots", "four"], "expected a positive integer, got 'four'"),
    (["bench", "--shots", "1,1"], "1 given twice"),
    (["bench", "--seeds", "x"], "expected a positive integer, got 'x'"),
    (["bench", "--seeds", ""], "expected a comma-separated list of seeds"),
    (["bench", "--batch-size", "0"], "expected a positive integer, got 0"),
    (["bench", "--device", "tpu"], "invalid choice: 'tpu'"),
    (["extract", "--backbone", "openclip:NoSuchNet/openai"], "unknown open_clip architecture"),
    (["report", "/nonexistent/dir"], "no results in /nonexistent/dir/results.jsonl"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["bench", "--gate-k", "0"], "expected a positive integer or all, got '0'"),
    (["bench", "--gate-lr", "-1"], "expected a positive number, got '-1'"),
    (["bench", "--gate-text-ratio", "1.5"], "expected a number in [0, 1), got '1.5'"),
    (["bench", "--gate-text-space", "latent"], "expected one of image, native, got 'latent'"),
    (["explain", "--method", "linear"], "method 'linear' has no gate to explain"),
    (["bench", "--jobs", "0"], "expected a positive integer, got 0"),
    (["explain", "--backbone", "tiny-clip", "--method", "gate", "--gate-k", "100", "--gate-epochs", "1",
      "--no-progress"],
     "k=100 is larger than the number of texts N=40"),
    (["bench", "--probe-patience", "soon"], "expected a positive integer or none, got 'soon'"),
    (["bench", "--probe-iterations", "1.5"], "expected a positive integer, got '1.5'"),
    ([], "the following arguments are required: COMMAND"),
])
def test_bad_input_is_one_line_and_status_2(capsys, argv, message):
    assert message in run_error(capsys, *argv)


def test_debug_shows_the_traceback():
    from crossgate.errors import UserError

    with pytest.raises(UserError):
        main(["bench", "--debug", "--backbone", "resnet9000"])


def test_listings(capsys):
    assert run(capsys, "backbones")[1].startswith("lite ")
    assert "fashion-mnist-full" in run(capsys, "datasets")[1]
    assert run(capsys, "methods")[1].splitlines()[0].startswith("zeroshot")


def test_entry_points_and_help():
    for cmd in (["crossgate"], [sys.executable, "-m", "crossgate"]):
        out = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "demo" in out.stdout and "bench" in out.stdout
    out = subprocess.run(["crossgate", "bench", "--shots", "0"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_bench_end_to_end_and_resume(capsys, tmp_path):
    argv = ["bench", "--backbone", "tiny-clip", "--shots", "1,2", "--seeds", "1,2", "--out", str(tmp_path / "run"),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--probe-iterations", "300", "--jobs", "2"]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "| zeroshot |" in out and "| linear |" in out
    results = tmp_path / "run" / "results.jsonl"
    rows = read_rows(results)
    n_methods = len(list_methods())
    assert len(rows) == n_methods * 2 * 2 and {r["method"] for r in rows} == set(list_methods())
    assert all(0 <= r["gate_top1_true_class"] <= 100 for r in rows if r["method"].startswith("gate"))
    required = {"dataset", "backbone", "method", "shots", "seed", "acc_train", "acc_val", "acc_test",
                "fit_seconds", "hparams", "crossgate_version", "git_commit", "backbone_identity", "split_source"}
    assert all(required <= set(r) for r in rows)
    assert all(0 <= r["acc_test"] <= 100 and r["n_test"] == 2000 for r in rows)
    assert {r["n_train"] for r in rows if r["shots"] == 2} == {20}
    for name in ("summary.md", "summary.csv", "accuracy_vs_shots__fashion-mnist__tiny-clip.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0

    # the same rows (but timings) whatever the number of worker processes
    serial = tmp_path / "serial"
    run(capsys, *[a if a != str(tmp_path / "run") else str(serial) for a in argv[:-1]], "1")
    def strip(r):
        return {k: v for k, v in r.items() if k != "fit_seconds"}
    assert [strip(r) for r in read_rows(serial / "results.jsonl")] == [strip(r) for r in rows]

    # resume: a crash left half a line; finished runs are skipped, the half line is dropped
    lines = results.read_text().splitlines(keepends=True)
    results.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    code, _, _ = run(capsys, *argv)
    again = read_rows(results)
    assert code == 0 and len(again) == len(rows)
    n = len(rows) - 1
    assert [json.dumps(r, sort_keys=True) for r in again[:n]] == [json.dumps(r, sort_keys=True) for r in rows[:n]]
    assert {(r["method"], r["shots"], r["seed"]) for r in again} == {(r["method"], r["shots"], r["seed"]) for r in rows}

    # report regenerates the tables from results.jsonl alone
    (tmp_path / "run" / "summary.md").unlink()
    code, out, _ = run(capsys, "report", str(tmp_path / "run"))
    assert code == 0 and (tmp_path / "run" / "summary.md").is_file() and "| linear |" in out


def test_extract_fills_the_cache(capsys, tmp_path):
    code, out, _ = run(capsys, "extract", "--backbone", "tiny-clip", "--cache-dir", str(tmp_path), "--no-progress")
    assert code == 0 and "train 480, val 160, test 2000" in out
    assert len(list((tmp_path / "features" / "image").glob("*.safetensors"))) == 3


def test_gate_flags_reach_the_config(capsys, tmp_path):
    from crossgate.cli import build_parser, method_configs_from

    args = build_parser().parse_args(["bench", "--gate-k", "all", "--gate-d-proj", "64", "--gate-epochs", "3",
                                      "--gate-text-space", "native", "--probe-iterations", "7",
                                      "--gda-alphas", "0.5,2", "--gate-joint-k-grid", "1,all"])
    configs = method_configs_from(args)
    cfg = configs["gate"]
    assert (cfg.k, cfg.d_proj, cfg.epochs, cfg.text_space, cfg.lr) == ("all", 64, 3, "native", 1e-3)
    assert configs["linear"] is configs["crossmodal"] and configs["linear"].iterations == 7
    assert configs["gda"].alphas == (0.5, 2.0) and configs["gate-joint"].k_grid == (1, "all")


def test_explain_prints_selected_texts(capsys, tmp_path):
    code, out, _ = run(capsys, "explain", "--backbone", "tiny-clip", "--method", "gate", "--shots", "2",
                       "--gate-epochs", "2", "--gate-k", "3", "--images", "0,1999", "--no-progress",
                       "--cache-dir", str(tmp_path))
    assert code == 0, out
    # 0-based positions, as `split show --split test` lists them; the embedded data has no files to name
    assert "test[0] embedded in memory, no file: true 't-shirt'" in out
    assert "test[1999] embedded in memory, no file: true 'ankle boot'" in out
    selections = [line for line in out.splitlines() if line.startswith("  ") and "] a " in line]
    assert len(selections) == 2 * 3  # k = 3 texts for each of the two images
    assert "Top-1 selection is of the true class for" in out
    err = run_error(capsys, "explain", "--backbone", "tiny-clip", "--images", "2000", "--method", "gate",
                    "--gate-epochs", "1", "--no-progress", "--cache-dir", str(tmp_path))
    assert "position 2000 is out of range: the test split has 2000 images (positions 0 to 1999)" in err


def test_split_show_lists_every_split_and_the_embedded_default_by_position(capsys):
    code, out, err = run(capsys, "split", "show", "fashion-mnist", "--split", "test")
    assert code == 0 and out.split() == [str(i) for i in range(2000)] and "0-based positions" in err
    code, out, _ = run(capsys, "split", "show", "fashion-mnist", "--split", "val", "--shots", "2", "--seed", "1")
    assert code == 0 and len(out.split()) == 20
    assert "give --shots K (and --seed S, default 1" in run_error(capsys, "split", "show", "fashion-mnist")


def test_flags_before_a_nested_command_are_kept(capsys, tmp_path):
    assert "missing" in run_error(capsys, "split", "--data-root", str(tmp_path), "--offline", "show", "oxford_pets",
                                  "--shots", "1", "--seed", "1")
    assert str(tmp_path) in run_error(capsys, "split", "--data-root", str(tmp_path), "--offline", "show",
                                      "oxford_pets", "--shots", "1", "--seed", "1")
    with pytest.raises(Exception):  # noqa: B017  (--debug given before `show` still shows the traceback)
        run(capsys, "split", "--debug", "show", "fashion-mnist")


def test_a_flag_of_a_method_not_run_is_refused(capsys):
    err = run_error(capsys, "train", "--method", "gate-joint", "--gate-d-proj", "512", "--out", "m")
    assert "--gate-d-proj configures gate" in err and "--gate-joint-*" in err


def test_predict_classifies_a_file_named_twice_once(tmp_path):
    from crossgate.cli import _image_files

    folder = tmp_path / "new"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(b"x")
    files = _image_files([folder / "a.png", folder, folder / "a.png"])
    assert [f.name for f in files] == ["a.png", "b.png"]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA GPU")
def test_device_cuda_without_a_gpu_is_a_user_error(capsys):
    assert "sees no CUDA GPU; use --device cpu" in run_error(capsys, "extract", "--backbone", "tiny-clip",
                                                             "--device", "cuda")
