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
    import os

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
    assert sizes == [min(2, os.cpu_count())] or (sizes == [] and os.cpu_count() == 1)


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


def test_12_names_that_are_not_utf8(capsys, tmp_path, folder):
    import os

    from crossgate.datasets.imagefolder import ImageFolderDataset

    Image.new("RGB", (16, 16), "blue").save(folder / "goldfish" / os.fsdecode(b"caf\xe9.png"))
    assert ImageFolderDataset(folder).identity
    (folder / "classnames.txt").write_bytes("goldfish poisson-\xe9\n".encode("latin-1"))
    assert "not UTF-8" in run_error(capsys, *bench_argv(tmp_path, folder))


def test_13_a_folder_too_small_for_a_split(capsys, tmp_path):
    folder = make_folder(tmp_path / "imgs", per_class=2)
    assert "no val images" in run_error(capsys, *bench_argv(tmp_path, folder))


def test_14_a_cache_manifest_of_the_wrong_shape_or_a_lock_folder_is_a_miss(tmp_path, folder, tiny):
    from crossgate.cache import FeatureCache
    from crossgate.datasets.imagefolder import ImageFolderDataset

    dataset, cache = ImageFolderDataset(folder), FeatureCache(tmp_path / "cache", progress=False)
    first = cache.image_features(tiny, dataset, "test").x
    stem = cache._image_stem(tiny, dataset, "test", "center")
    for manifest in ("null", "[]", '{"sha256": "x", "tensors": {"x": {}}}'):
        stem.with_name(stem.name + ".json").write_text(manifest)
        assert (cache.image_features(tiny, dataset, "test").x == first).all()
    lock = cache.root / "locks" / f"{stem.parent.name}-{stem.name}.lock"  # all locks in one folder
    assert lock.is_file() and not list(stem.parent.glob("*.lock"))
    lock.unlink()
    lock.mkdir()
    stem.with_name(stem.name + ".json").write_text("null")
    assert (cache.image_features(tiny, dataset, "test").x == first).all()


def test_15_malformed_result_rows_are_skipped_with_a_warning(capsys, tmp_path, folder):
    assert run(capsys, *bench_argv(tmp_path, folder))[0] == 0
    results = tmp_path / "run" / "results.jsonl"
    good = results.read_bytes()
    results.write_bytes(b'42\n{"method": "x"}\n{"dataset": "d", "backbone": "b", "method": "m", "shots": "four", '
                        b'"seed": 1, "acc_test": 50}\n\xff\xfe\n' + good)
    code, out, err = run(capsys, "report", str(tmp_path / "run"))
    assert code == 0 and "ignored 4 malformed line(s)" in err and "| logreg |" in out + (
        tmp_path / "run" / "summary.md").read_text()
    assert run(capsys, *bench_argv(tmp_path, folder))[0] == 0  # and bench resumes past them


def test_19_a_path_component_too_long_is_one_line(capsys, tmp_path):
    err = run_error(capsys, "bench", "--dataset", f"imagefolder:{tmp_path / ('x' * 300)}", "--backbone",
                    "tiny-clip", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r"))
    assert "too long" in err


def test_20_workers_leave_ctrl_c_to_the_main_process(lite_small_features):
    import signal

    import torch

    from crossgate.bench import _worker_init

    before, threads = signal.getsignal(signal.SIGINT), torch.get_num_threads()
    try:
        _worker_init(lite_small_features)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
        torch.set_num_threads(threads)


def test_22_a_chunk_deleted_before_the_merge_is_one_line(tmp_path):
    import numpy as np

    from crossgate.errors import UserError
    from crossgate.extraction import Chunks, merge_chunks
    from crossgate.storage import save_arrays

    chunks = Chunks.of(tmp_path / "entry", 8, batch_size=4, chunk_images=4)
    for start in chunks.starts():
        save_arrays(chunks.path(start), {"x": np.ones((4, 3), np.float32), "positions": np.arange(start, start + 4)},
                    {"bad": []})
    chunks.path(4).with_suffix(".safetensors").unlink()
    chunks.path(4).with_suffix(".json").unlink()
    with pytest.raises(UserError, match="changed or vanished"):
        merge_chunks(chunks, np.zeros(8, np.int64), 3, {}, "fail")


def test_24_diverged_training_says_so_and_which_flag(capsys, tmp_path, folder):
    argv = bench_argv(tmp_path, folder)
    i = argv.index("--methods")
    del argv[i:i + 2]
    err = run_error(capsys, *argv, "--methods", "gate", "--gate-lr", "1e30", "--gate-epochs", "2")
    assert "diverged" in err and "--gate-lr" in err


def test_24_any_fit_that_leaves_nan_weights_is_refused():
    """The sibling: every estimator, not only those trained by the shared loop (a probe whose chosen
    checkpoint diverged, a closed form on degenerate data)."""
    import numpy as np

    from crossgate.errors import UserError
    from crossgate.methods.base import FewShotClassifier

    class Broken(FewShotClassifier):
        def fit(self, x, y, *, text=None, val=None):
            self.coef_ = np.full((2, 2), np.nan, np.float32)
            return self

    with pytest.raises(UserError, match="Broken.s fit gave NaN or infinite values"):
        Broken().fit(np.zeros((2, 2)), np.array([0, 1]))


def test_25_plot_names_fit_any_file_system():
    from crossgate.report import plot_file_name

    a = plot_file_name("imagefolder:/" + "very_long_folder_name/" * 20 + "a", "tiny-clip")
    b = plot_file_name("imagefolder:/" + "very_long_folder_name/" * 20 + "b", "tiny-clip")
    assert len(a.encode()) <= 255 and a != b


def test_27_classnames_txt_lines_are_checked_not_dropped(capsys, tmp_path, folder):
    from crossgate.datasets.imagefolder import ImageFolderDataset

    (folder / "classnames.txt").write_text("goldfish\tred fish\n# a comment\n")
    assert "red fish" in ImageFolderDataset(folder).classnames
    (folder / "classnames.txt").write_text("goldfsh red fish\n")
    assert "line 1" in run_error(capsys, *bench_argv(tmp_path, folder))


def test_33_a_class_folder_linked_to_another_is_warned_about(caplog, tmp_path, folder):
    import logging

    from crossgate.datasets.imagefolder import ImageFolderDataset

    (folder / "goldfish_again").symlink_to(folder / "goldfish", target_is_directory=True)
    logging.getLogger("crossgate").addHandler(caplog.handler)  # the CLI stops its propagation to the root
    try:
        ImageFolderDataset(folder)
    finally:
        logging.getLogger("crossgate").removeHandler(caplog.handler)
    assert "is a link to goldfish" in caplog.text


def test_31_an_error_with_an_open_clip_model_is_one_line(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "crossgate", "explain", "--backbone", "tiny-clip", "--method", "gate",
                          "--gate-k", "100", "--gate-epochs", "1", "--no-progress", "--cache-dir", str(tmp_path / "c")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0, out.stderr


def test_32_report_on_a_read_only_folder_says_what_report_can_do(capsys, monkeypatch, tmp_path, folder):
    import os

    assert run(capsys, *bench_argv(tmp_path, folder))[0] == 0
    real = os.access  # a read-only folder, also for root (who may write anywhere)
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path / "run") else real(p, mode))
    err = run_error(capsys, "report", str(tmp_path / "run"))
    assert "copy the folder somewhere writable" in err and "--cache-dir" not in err


def test_32_awrite_error_names_advice_the_command_can_follow(tmp_path):
    import errno

    from crossgate.storage import write_error

    assert "free some space" in str(write_error(tmp_path / "x", OSError(errno.ENOSPC, "No space left on device")))
    assert "free some space" not in str(write_error(tmp_path / "x", OSError(errno.EROFS, "Read-only file system")))


def test_34_archives_extract_on_pythons_without_tar_filters(monkeypatch, tmp_path):
    import io
    import tarfile

    from crossgate.datasets.download import safe_extract

    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        data = b"hello"
        info = tarfile.TarInfo("folder/file.txt")
        info.size, info.mode = len(data), 0o4755  # setuid: dropped either way
        tar.addfile(info, io.BytesIO(data))
    # a Python before 3.10.12 / 3.11.4: no filter functions, and extractall takes no filter argument
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    real = tarfile.TarFile.extractall

    def old_extractall(self, path=".", members=None, *, numeric_owner=False, **kwargs):
        if kwargs:
            raise TypeError(f"extractall() got an unexpected keyword argument {next(iter(kwargs))!r}")
        return real(self, path, members, numeric_owner=numeric_owner)

    monkeypatch.setattr(tarfile.TarFile, "extractall", old_extractall)
    safe_extract(archive, tmp_path / "out")
    extracted = tmp_path / "out" / "folder" / "file.txt"
    assert extracted.read_bytes() == b"hello" and not extracted.stat().st_mode & 0o4000


def test_09_a_crash_while_a_model_is_rewritten_keeps_the_old_one(monkeypatch, tmp_path, saved_model):
    import shutil

    import numpy as np

    import crossgate.storage as storage
    from crossgate.model import load_model, save_model

    target = tmp_path / "model"
    shutil.copytree(saved_model[0], target)
    old = load_model(target)
    changed = load_model(target)
    changed.classifier.coef_ = np.asarray(changed.classifier.coef_) * 2  # a different model to write over it

    def die_between_the_two_files(*args, **kwargs):  # the weights are written, the manifest not yet
        raise KeyboardInterrupt

    monkeypatch.setattr(storage, "_write_manifest", die_between_the_two_files)
    with pytest.raises(KeyboardInterrupt):
        save_model(target, changed)
    monkeypatch.undo()
    again = load_model(target)  # the old model, whole
    assert np.array_equal(again.classifier.coef_, old.classifier.coef_)
    assert not list(tmp_path.glob(".model.*"))  # the half-written new pair is cleaned away


def test_21_tip_grid_memory_does_not_grow_with_classes_squared(monkeypatch):
    import torch

    from crossgate.methods import tip
    from crossgate.methods.tip import TipConfig, search_beta_alpha

    gen = torch.Generator().manual_seed(0)
    n_classes, dim = 200, 16
    unit = lambda t: torch.nn.functional.normalize(t, dim=1)  # noqa: E731
    text = unit(torch.randn(n_classes, dim, generator=gen))
    keys = unit(torch.randn(2 * n_classes, dim, generator=gen))
    values = torch.nn.functional.one_hot(torch.arange(2 * n_classes) % n_classes, n_classes).float()
    xv, yv = unit(torch.randn(3 * n_classes, dim, generator=gen)), torch.arange(3 * n_classes) % n_classes
    cfg = TipConfig()
    whole = tip.tip_logits(xv, keys, values, text, torch.tensor(cfg.betas), torch.tensor(cfg.alphas))
    acc = (whole.argmax(-1) == yv).float().mean(-1)
    i, j = divmod(int(torch.argmax(acc)), len(cfg.alphas))

    sizes = []
    real = tip.tip_logits
    monkeypatch.setattr(tip, "tip_logits", lambda *a: sizes.append(real(*a).numel()) or real(*a))
    monkeypatch.setattr(tip, "GRID_FLOATS", 50_000)
    assert search_beta_alpha(xv, yv, keys, values, text, cfg)[:2] == (cfg.betas[i], cfg.alphas[j])
    assert max(sizes) <= 50_000 < whole.numel()


@pytest.mark.parametrize("edit,message", [
    (lambda s: [e.__setitem__(1, 5) for e in s["train"] + s["val"] + s["test"] if e[1] == 2], "0..C-1"),
    (lambda s: s["train"].append(["x.jpg", 1]), "not [image path, label, class name]"),
    (lambda s: s["test"].append(["x.jpg", 7, "ghost"]), "appear in val / test but not in train"),
    (lambda s: s.pop("val"), "'train', 'val' and 'test' lists"),
])
def test_23_a_user_split_file_is_checked_whole(tmp_path, edit, message):
    from crossgate.datasets.coop import SPECS, CoopDataset
    from crossgate.errors import UserError
    from tests.conftest import make_pets_like_root

    split, _ = make_pets_like_root(tmp_path / "data")
    edit(split)
    (tmp_path / "data" / "oxford_pets" / "split_zhou_OxfordPets.json").write_text(json.dumps(split))
    with pytest.raises(UserError, match=message):
        CoopDataset(SPECS["oxford_pets"], tmp_path / "data", download=False, progress=False)
