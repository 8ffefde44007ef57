"""Issue 14: hostile inputs found from outside. Each test names its item; each failed on the main of before."""
import json

import pytest
from PIL import Image

from crossgate.results import read_rows
from tests.conftest import make_folder, run, run_error


def bench_argv(tmp_path, folder, out="run", *extra):
    return ["bench", "--dataset", f"imagefolder:{folder}", "--backbone", "tiny-clip", "--shots", "1",
            "--seeds", "1", "--methods", "zeroshot,logreg", "--jobs", "1", "--no-progress",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / out), *extra]


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "imgs")


def test_01_a_second_run_into_the_same_folder_is_refused_while_one_writes(capsys, tmp_path, folder):
    from filelock import FileLock

    (tmp_path / "run").mkdir()
    with FileLock(tmp_path / "run" / "results.jsonl.lock"):  # another run holds the folder
        err = run_error(capsys, *bench_argv(tmp_path, folder))
    assert "another crossgate run is writing to" in err
    assert run(capsys, *bench_argv(tmp_path, folder))[0] == 0  # released: runs


def test_02_resuming_with_the_same_settings_adds_nothing(capsys, tmp_path, folder):
    assert run(capsys, *bench_argv(tmp_path, folder))[0] == 0
    rows = read_rows(tmp_path / "run" / "results.jsonl")
    assert run(capsys, *bench_argv(tmp_path, folder, "run", "--logreg-l2-grid", "1e-4,1e-3,1e-2"))[0] == 0
    assert read_rows(tmp_path / "run" / "results.jsonl") == rows


@pytest.mark.parametrize("change", [["--logreg-l2-grid", "0.5"], ["--flip"]])
def test_02_resuming_with_other_settings_is_refused(capsys, tmp_path, folder, change):
    assert run(capsys, *bench_argv(tmp_path, folder))[0] == 0
    err = run_error(capsys, *bench_argv(tmp_path, folder, "run", *change))
    assert "would not be comparable: choose another --out" in err


def test_02_resuming_on_another_backbone_identity_or_changed_folder_is_refused(capsys, tmp_path, folder):
    assert run(capsys, *bench_argv(tmp_path, folder))[0] == 0
    results = tmp_path / "run" / "results.jsonl"
    rows = read_rows(results)
    results.write_text("".join(json.dumps({**r, "backbone_identity": r["backbone_identity"] + ";cuda-fp16"}) + "\n"
                               for r in rows))
    assert "backbone identity" in run_error(capsys, *bench_argv(tmp_path, folder))
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    Image.new("RGB", (16, 16), "red").save(folder / "goldfish" / "new.png")  # the folder changed
    assert "dataset content" in run_error(capsys, *bench_argv(tmp_path, folder))


@pytest.mark.parametrize("flag,value", [("--methods", "logreg,logreg"), ("--seeds", "1,2,1"), ("--shots", "1,1")])
def test_03_a_repeated_list_item_is_refused(capsys, tmp_path, folder, flag, value):
    argv = bench_argv(tmp_path, folder)
    argv[argv.index(flag) + 1] = value
    assert "given twice" in run_error(capsys, *argv)


def test_04_hidden_folders_and_files_are_not_classes_or_images(tmp_path, folder):
    from crossgate.datasets.imagefolder import ImageFolderDataset

    for junk in (".thumbnails", ".ipynb_checkpoints", "__MACOSX"):
        (folder / junk).mkdir()
        Image.new("RGB", (8, 8)).save(folder / junk / "x.png")
    Image.new("RGB", (8, 8)).save(folder / "goldfish" / "._goldfish.png")  # macOS resource fork
    dataset = ImageFolderDataset(folder)
    assert dataset.classnames == ["golden retriever", "goldfish", "tabby cat"]
    assert not any("._" in p for s in ("train", "val", "test") for p in dataset.split(s).paths)


@pytest.mark.parametrize("template", ["a photo of a {{}}.", "{} {x}", "{}{0.__class__}", "{} }", "{:>9}"])
def test_05_11_templates_are_parsed_not_counted(capsys, tmp_path, folder, template):
    err = run_error(capsys, *bench_argv(tmp_path, folder), "--template", template)
    assert "template" in err and "{}" in err


def test_05_a_literal_brace_beside_the_class_name_is_fine(tmp_path, folder):
    from crossgate.datasets.imagefolder import ImageFolderDataset

    texts, _ = ImageFolderDataset(folder, templates=["{{x}} a {}"]).prompts()
    assert texts[0] == "{x} a golden retriever"


def test_07_no_readable_test_image_is_an_error_not_nan(capsys, tmp_path, folder):
    from crossgate.datasets.imagefolder import ImageFolderDataset

    for rel in ImageFolderDataset(folder).split("test").paths:
        (folder / rel).write_bytes(b"")
    code, _, err = run(capsys, *bench_argv(tmp_path, folder), "--on-bad-image", "skip")
    # the warning naming the skipped files, then one error line
    assert code == 2 and "Traceback" not in err and "no test images are left" in err.strip().splitlines()[-1]
    assert not (tmp_path / "run" / "results.jsonl").exists() or "NaN" not in (
        tmp_path / "run" / "results.jsonl").read_text()


def test_07_a_row_with_nan_is_never_written(tmp_path):
    from crossgate.errors import UserError
    from crossgate.results import append_row

    with pytest.raises(UserError, match="acc_test"):
        append_row(tmp_path / "results.jsonl", {"method": "x", "acc_test": float("nan")})
    assert not (tmp_path / "results.jsonl").exists() or (tmp_path / "results.jsonl").read_text() == ""


def test_08_an_out_folder_of_the_users_own_files_is_refused(capsys, tmp_path, folder):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "summary.md").write_text("my notes")
    (tmp_path / "mine" / "thesis.tex").write_text("...")
    err = run_error(capsys, *bench_argv(tmp_path, folder, "mine"))
    assert "choose a new or empty folder" in err
    assert (tmp_path / "mine" / "summary.md").read_text() == "my notes"


@pytest.mark.parametrize("seed", ["18446744073709551616", "9223372036854775808"])
def test_10_a_seed_beyond_the_generators_is_refused_before_any_fit(capsys, tmp_path, folder, seed):
    argv = bench_argv(tmp_path, folder)
    argv[argv.index("--seeds") + 1] = seed
    assert "2**63" in run_error(capsys, *argv)
    assert not (tmp_path / "run").exists()


def test_18_a_bad_environment_number_is_one_line(capsys, monkeypatch):
    monkeypatch.setenv("CROSSGATE_CHUNK_IMAGES", "abc")
    assert "CROSSGATE_CHUNK_IMAGES='abc' is not a positive integer" in run_error(capsys, "methods")


def test_26_a_folder_of_unsupported_images_names_the_accepted_ones(capsys, tmp_path, folder):
    (folder / "heic_only").mkdir()
    (folder / "heic_only" / "IMG_0001.HEIC").write_bytes(b"\x00" * 64)
    err = run_error(capsys, *bench_argv(tmp_path, folder))
    assert "heic_only" in err and ".jpg" in err and ".png" in err


def test_29_jobs_beyond_the_draws_start_no_idle_processes(monkeypatch, tmp_path, lite_small_features):
    import multiprocessing

    from crossgate.bench import BenchConfig, run_bench

    sizes = []
    real = multiprocessing.get_context

    class Context:
        def __init__(self, method):
            self.inner = real(method)

        def Pool(self, n, *args, **kwargs):  # noqa: N802  (multiprocessing's name)
            sizes.append(n)
            return self.inner.Pool(n, *args, **kwargs)

    monkeypatch.setattr(multiprocessing, "get_context", Context)
    config = BenchConfig(shots=(1,), seeds=(1, 2), methods=("zeroshot",), out=tmp_path / "run", jobs=100)
    run_bench(config, lite_small_features, "id")
    assert sizes == [2]


def test_30_an_empty_imagefolder_path_does_not_scan_the_current_folder(capsys, tmp_path):
    err = run_error(capsys, "bench", "--dataset", "imagefolder:", "--backbone", "tiny-clip",
                    "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r"))
    assert "imagefolder: needs a path" in err


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A logreg model on tiny-clip features of a small image folder, and an image to predict."""
    from crossgate.cli import main

    root = tmp_path_factory.mktemp("model")
    folder = make_folder(root / "imgs")
    assert main(["train", "--dataset", f"imagefolder:{folder}", "--backbone", "tiny-clip", "--method", "logreg",
                 "--shots", "2", "--cache-dir", str(root / "cache"), "--no-progress", "--out",
                 str(root / "model")]) == 0
    return root / "model", folder / "goldfish" / "0.png"


def tampered(saved_model, tmp_path, edit):
    """A copy of the model with `edit(arrays, meta)` applied and the checksum recomputed, as an attacker can."""
    import shutil

    from crossgate.storage import load_arrays, save_arrays

    copy = tmp_path / "tampered"
    shutil.copytree(saved_model[0], copy)
    arrays, meta = load_arrays(copy / "model")
    meta = {k: v for k, v in meta.items() if k not in ("checksum", "tensors")}
    meta = edit(arrays, meta) or meta
    save_arrays(copy / "model", arrays, meta)
    return copy


def _nan_weights(arrays, meta):
    name = next(k for k, v in arrays.items() if v.dtype.kind == "f" and v.size)
    arrays[name] = arrays[name].copy()
    arrays[name].flat[0] = float("nan")


@pytest.mark.parametrize("edit,message", [
    (_nan_weights, "NaN or infinite"),
    (lambda a, m: {**m, "classnames": "abc"}, "classnames"),
    (lambda a, m: {**m, "classnames": [1, 2, 3]}, "classnames"),
    (lambda a, m: {k: v for k, v in m.items() if k != "backbone_identity"}, "backbone_identity"),
    (lambda a, m: {**m, "state": []}, "'state'"),
    (lambda a, m: {**m, "method": "tip"}, "TipConfig"),
    (lambda a, m: {**m, "state": {**m["state"], "values": {**m["state"]["values"], "_logits": 1}}}, "learned attr"),
    (lambda a, m: {**m, "state": {**m["state"], "values": {**m["state"]["values"], "n_features_in_": "32"}}},
     "n_features_in_"),
    (lambda a, m: {**m, "templates": ["{} {0.__class__}"]}, "template"),
])
def test_06_16_28_a_tampered_model_is_refused_in_one_line(capsys, tmp_path, saved_model, edit, message):
    model = tampered(saved_model, tmp_path, edit)
    err = run_error(capsys, "predict", str(model), str(saved_model[1]), "--no-progress")
    assert message in err


def test_17_a_model_file_never_chooses_a_file_to_read(capsys, tmp_path, saved_model, monkeypatch):
    import crossgate.encoders.openclip as openclip

    opened = []
    monkeypatch.setattr(openclip, "_checkpoint_digest", lambda path: opened.append(path) or "x")
    model = tampered(saved_model, tmp_path, lambda a, m: {**m, "backbone": "openclip:crossgate-tiny//etc/passwd"})
    err = run_error(capsys, "predict", str(model), str(saved_model[1]), "--no-progress")
    assert "--backbone" in err and not opened
