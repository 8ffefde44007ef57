"""Issue 20: the third hostile-input round. Each test names its item; each failed on the main of before."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crossgate.results import read_rows
from tests.conftest import make_folder, make_pets_like_root, run, run_error


def bench_argv(tmp_path, folder, out="run", *extra):
    return ["bench", "--dataset", f"imagefolder:{folder}", "--backbone", "tiny-clip", "--shots", "1",
            "--seeds", "1", "--methods", "zeroshot,logreg", "--jobs", "1", "--no-progress",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / out), *extra]


def train_argv(tmp_path, folder, out, *extra):
    return ["train", "--dataset", f"imagefolder:{folder}", "--backbone", "tiny-clip", "--method", "logreg",
            "--shots", "2", "--no-progress", "--cache-dir", str(tmp_path / "cache"), "--out", str(out), *extra]


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "imgs")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model folder written by train, the image folder it was fitted on, and the cache."""
    from crossgate.cli import main

    tmp = tmp_path_factory.mktemp("trained")
    folder = make_folder(tmp / "imgs")
    assert main(train_argv(tmp, folder, tmp / "model")) == 0
    return tmp / "model", folder, tmp


# --- 1. data loss: train --out and bench --out replace only what crossgate wrote ---


def test_01_train_refuses_a_folder_of_the_users_files(capsys, tmp_path, folder):
    notes = tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "thesis.tex").write_text("my thesis")
    (notes / "sub" / "data.csv").write_text("1,2")
    err = run_error(capsys, *train_argv(tmp_path, folder, notes))
    assert "not a crossgate model" in err
    assert (notes / "thesis.tex").read_text() == "my thesis" and (notes / "sub" / "data.csv").exists()
    # the dataset's own images are the user's too
    err = run_error(capsys, *train_argv(tmp_path, folder, folder / "goldfish"))
    assert len(list((folder / "goldfish").glob("*.png"))) == 10


def test_01_train_replaces_its_own_model_and_an_empty_folder(capsys, tmp_path, trained):
    model, folder, tmp = trained
    (tmp_path / "empty").mkdir()
    assert run(capsys, *train_argv(tmp, folder, tmp_path / "empty"))[0] == 0
    assert "already holds a model" in run_error(capsys, *train_argv(tmp, folder, tmp_path / "empty"))  # issue 23
    assert run(capsys, *train_argv(tmp, folder, tmp_path / "empty"), "--replace")[0] == 0  # its own model now
    (tmp_path / "empty" / "model.json").write_text((tmp_path / "empty" / "model.json").read_text() + " ")
    (tmp_path / "empty" / "extra.txt").write_text("mine")  # no longer only crossgate's two files
    assert "not a crossgate model" in run_error(capsys, *train_argv(tmp, folder, tmp_path / "empty"), "--replace")


@pytest.mark.parametrize("out", [".", ".."])
def test_01_train_out_dot_is_one_line_and_leaves_nothing(capsys, monkeypatch, tmp_path, folder, out):
    work = tmp_path / "work" / "here"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    err = run_error(capsys, *train_argv(tmp_path, folder, out))
    assert "current folder" in err
    assert not list(tmp_path.rglob(".*.old-*")) and not list(tmp_path.rglob(".*.new-*"))


def test_01_a_failed_swap_is_one_line_and_keeps_the_old_model(monkeypatch, tmp_path, trained):
    import crossgate.model as model_module
    from crossgate.errors import UserError
    from crossgate.model import load_model, save_model

    model, _, _ = trained
    copy = tmp_path / "m"
    import shutil

    shutil.copytree(model, copy)
    saved = load_model(copy)
    real = os.replace

    def read_only(src, dst):
        if str(src) == str(copy):
            raise PermissionError(13, "Permission denied")
        return real(src, dst)

    monkeypatch.setattr(model_module.os, "replace", read_only)
    with pytest.raises(UserError, match="cannot write"):
        save_model(copy, saved)
    assert load_model(copy).classnames == saved.classnames
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no .m.old-* or .m.new-* left behind


def test_01_bench_refuses_to_overwrite_the_users_summary(capsys, tmp_path, folder):
    notes = tmp_path / "run"
    notes.mkdir()
    (notes / "summary.md").write_text("my own notes")
    assert "summary.md" in run_error(capsys, *bench_argv(tmp_path, folder))
    assert (notes / "summary.md").read_text() == "my own notes"
    # beside crossgate's own results.jsonl too: a summary.md that crossgate did not write is not overwritten
    (notes / "summary.md").unlink()
    assert run(capsys, *bench_argv(tmp_path, folder))[0] == 0
    (notes / "summary.md").write_text("edited by hand")
    assert "changed since" in run_error(capsys, "report", str(notes))
    assert (notes / "summary.md").read_text() == "edited by hand"


# --- 2. plot names ---


def test_02_datasets_differing_in_punctuation_get_distinct_plots():
    from crossgate.report import plot_file_name

    names = {plot_file_name(d, "lite") for d in ("my photos", "my_photos", "my-photos", "My_photos", "mé photos")}
    assert len(names) == 5
    assert plot_file_name("fashion-mnist", "tiny-clip") == "accuracy_vs_shots__fashion-mnist__tiny-clip.png"


# --- 3. and 4. resume compares every setting, and one folder is one dataset ---


def test_03_resume_with_another_corrupted_subset_is_refused(capsys, tmp_path, folder):
    corrupt = ["--corrupt", "gaussian_noise:1"]
    assert run(capsys, *bench_argv(tmp_path, folder, "run", *corrupt, "--corrupt-per-class", "1"))[0] == 0
    err = run_error(capsys, *bench_argv(tmp_path, folder, "run", *corrupt, "--corrupt-per-class", "2"))
    assert "corrupt_per_class" in err
    # the clean rows do not depend on it: a run without corruptions resumes
    assert run(capsys, *bench_argv(tmp_path, folder, "run"))[0] == 0


def test_04_a_folder_typed_two_ways_is_one_dataset(capsys, monkeypatch, tmp_path, folder):
    assert run(capsys, *bench_argv(tmp_path, folder))[0] == 0
    rows = read_rows(tmp_path / "run" / "results.jsonl")
    monkeypatch.chdir(tmp_path)
    argv = bench_argv(tmp_path, folder)
    argv[argv.index("--dataset") + 1] = "imagefolder:./imgs/"
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "all 2 runs are already in" in out
    assert read_rows(tmp_path / "run" / "results.jsonl") == rows
    assert rows[0]["dataset"] == f"imagefolder:{folder.resolve()}"


# --- 5. a swap of two files is seen ---


def test_05_swapping_two_same_size_files_with_one_mtime_changes_the_identity(tmp_path, folder):
    from crossgate.datasets.imagefolder import ImageFolderDataset

    a, b = folder / "goldfish" / "x.bmp", folder / "tabby_cat" / "x.bmp"  # BMP: same size for any pixels
    Image.new("RGB", (16, 16), "gold").save(a)
    Image.new("RGB", (16, 16), "gray").save(b)
    data_a, data_b = a.read_bytes(), b.read_bytes()
    assert len(data_a) == len(data_b) and data_a != data_b
    when = a.stat().st_mtime_ns
    os.utime(b, ns=(when, when))
    before = ImageFolderDataset(folder).identity
    a.write_bytes(data_b)  # contents swapped in place (same inode, size)
    b.write_bytes(data_a)
    for p in (a, b):  # and the modification time set back, as cp -p or touch -r would
        os.utime(p, ns=(when, when))
    middle = ImageFolderDataset(folder).identity
    assert middle != before
    tmp = a.with_name("swap.tmp")  # and swapped by renames
    os.rename(a, tmp)
    os.rename(b, a)
    os.rename(tmp, b)
    assert ImageFolderDataset(folder).identity not in (before, middle)


# --- 6. pre-split folders ---


def test_06_presplit_folders_are_checked(capsys, tmp_path):
    from crossgate.datasets.imagefolder import ImageFolderDataset
    from crossgate.errors import UserError

    root = make_folder(tmp_path / "split", presplit=True)
    assert ImageFolderDataset(root).classnames == ["golden retriever", "goldfish", "tabby cat"]
    test = root / "test"
    test.rename(tmp_path / "test-aside")
    with pytest.raises(UserError, match="but no test/"):
        ImageFolderDataset(root)
    (tmp_path / "test-aside").rename(test)
    (root / "val" / "parrot").mkdir()
    Image.new("RGB", (8, 8)).save(root / "val" / "parrot" / "0.png")
    with pytest.raises(UserError, match="'parrot' is in"):
        ImageFolderDataset(root)
    import shutil

    shutil.rmtree(root / "val" / "parrot")
    for f in (root / "train" / "goldfish").iterdir():
        f.unlink()
    with pytest.raises(UserError, match="no images"):
        ImageFolderDataset(root)


def test_06_chance_is_one_over_the_classes():
    from crossgate.report import chance_level

    assert chance_level([{"shots": 1, "n_train": 2, "n_classes": 3, "train_views": ["center"]}]) == pytest.approx(
        100 / 3)


# --- 7. EXIF orientation ---


def _rotated_jpeg(path):
    """A 40x20 picture, left half black and right half white, stored turned by 90° with the tag saying so."""
    upright = np.zeros((20, 40, 3), np.uint8)
    upright[:, 20:] = 255
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_270)  # 20 wide, 40 high
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned 90° clockwise: "turn it 90° counter-clockwise to view"
    stored.save(path, exif=exif.tobytes(), quality=95)
    return upright


def test_07_exif_orientation_is_followed_by_both_decoders(tmp_path):
    from crossgate.images import open_rgb
    from crossgate.pixels import read_for_decode

    upright = _rotated_jpeg(tmp_path / "r.jpg")
    image = open_rgb(tmp_path / "r.jpg", "")
    assert image.size == (40, 20)
    assert np.abs(np.asarray(image, np.int16) - upright).mean() < 10
    kind, pixels = read_for_decode(tmp_path / "r.jpg", "")
    assert kind == "rgb" and pixels.shape == (20, 40, 3)  # the tensor decoder would not turn it: PIL does


# --- 8. a saved model's arrays must fit its class names and feature size ---


@pytest.mark.parametrize("shape", [(5, 32), (3, 31)])
def test_08_misshapen_weights_are_a_damaged_model(capsys, tmp_path, trained, shape):
    from safetensors.numpy import load_file, save_file

    from crossgate.storage import sha256_file

    model, folder, _ = trained
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(model, bad)
    arrays = load_file(str(bad / "model.safetensors"))
    key = next(k for k, v in arrays.items() if v.ndim == 2)
    arrays[key] = np.zeros(shape if arrays[key].shape[0] == 3 else shape[::-1], np.float32)
    save_file(arrays, str(bad / "model.safetensors"))
    meta = json.loads((bad / "model.json").read_text())
    meta["sha256"] = sha256_file(bad / "model.safetensors")
    meta["tensors"][key]["shape"] = list(arrays[key].shape)
    (bad / "model.json").write_text(json.dumps(meta))
    err = run_error(capsys, "predict", str(bad), str(folder / "goldfish" / "0.png"), "--no-progress")
    assert "damaged" in err


# --- 9. published index files are checked whole ---


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["train"].update(indices=[d["train"]["indices"][0]] * len(d["train"]["indices"]),
                                 data=[d["train"]["data"][0]] * len(d["train"]["data"])), "more than once"),
    (lambda d: d["train"].update(indices=[i + 0.5 for i in d["train"]["indices"]]), "not an integer"),
    (lambda d: d["train"].update(indices=d["train"]["indices"] + [0]), "indices but"),
    (lambda d: d["train"].update(data=[None] * len(d["train"]["data"])), "not an object"),
    (lambda d: d["val"].update(indices=d["val"]["indices"][:-1], data=d["val"]["data"][:-1]), "images of class"),
])
def test_09_index_files_are_checked_whole(tmp_path, edit, message):
    from crossgate.datasets import load_dataset
    from crossgate.errors import UserError
    from crossgate.settings import Settings

    make_pets_like_root(tmp_path)
    index = tmp_path / "indices" / "oxford_pets" / "shot_2-seed_1.json"
    data = json.loads(index.read_text())
    edit(data)
    index.write_text(json.dumps(data))
    pets = load_dataset("oxford_pets", Settings(data_root=tmp_path, offline=True))
    from crossgate.datasets import choose_few_shot

    train, val = pets.split("train"), pets.split("val")
    with pytest.raises(UserError, match=message):
        choose_few_shot(train.labels, val.labels, 2, 1, pets.classnames, pets.index_dir, train.paths, val.paths)


# --- 10. and 11. nothing is read from outside ---


@pytest.mark.parametrize("path", ["../../../elsewhere/secret.png", "/etc/passwd", "a/../../b.jpg"])
def test_10_split_file_paths_stay_inside_the_images_folder(tmp_path, path):
    from crossgate.datasets import load_dataset
    from crossgate.errors import UserError
    from crossgate.settings import Settings

    split, _ = make_pets_like_root(tmp_path)
    split["test"][0][0] = path
    (tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json").write_text(json.dumps(split))
    with pytest.raises(UserError, match="outside the dataset's images folder"):
        load_dataset("oxford_pets", Settings(data_root=tmp_path, offline=True))


def test_11_a_model_never_names_a_relative_checkpoint(capsys, monkeypatch, tmp_path, trained):
    import crossgate.encoders.openclip as openclip

    model, folder, _ = trained
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(model, bad)
    meta = json.loads((bad / "model.json").read_text())
    meta["backbone"] = "openclip:crossgate-tiny/w.bin"
    (bad / "model.json").write_text(json.dumps(meta))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.bin").write_bytes(b"not weights")
    opened = []
    monkeypatch.setattr(openclip, "_checkpoint_digest", lambda path: opened.append(path) or "x")
    err = run_error(capsys, "predict", str(bad), str(folder / "goldfish" / "0.png"), "--no-progress")
    assert "--backbone" in err and not opened


# --- 12. and 13. hostile JSON and rows ---


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, "1" * 5001, '{"a": NaN}', "\ufeff{}x"],
                         ids=["deep", "digits", "nan", "bom-then-junk"])
def test_12_hostile_json_is_a_bad_json(text):
    from crossgate.jsonio import BadJSON, parse_json

    with pytest.raises(BadJSON):
        parse_json(text)


def test_12_hostile_json_in_every_file_is_one_line(capsys, tmp_path, trained):
    model, folder, _ = trained
    deep = "[" * 100_000 + "]" * 100_000
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(model, bad)
    (bad / "model.json").write_text(deep)
    assert "not valid JSON" in run_error(capsys, "predict", str(bad), str(folder), "--no-progress")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.jsonl").write_text(deep + "\n" + "1" * 5001 + "\n")
    code, _, err = run(capsys, "report", str(run_dir))
    assert code == 2 and "no results" in err and "ignored 1 malformed" in err and "Traceback" not in err
    from crossgate.storage import load_arrays, save_arrays

    save_arrays(tmp_path / "entry", {"x": np.zeros(2, np.float32)}, {})
    (tmp_path / "entry.json").write_text(deep)
    assert load_arrays(tmp_path / "entry") is None  # a cache manifest that is not JSON is a miss


def test_13_a_row_with_shots_all_is_skipped_not_a_crash(capsys, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    good = {"dataset": "d", "backbone": "b", "method": "m", "shots": 1, "seed": 1, "acc_test": 50.0}
    rows = [good, {**good, "shots": "all"}, {**good, "seed": 2, "acc_clean": "x", "corruption": "fog", "severity": 3}]
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = run(capsys, "report", str(run_dir))
    assert code == 0 and "ignored 2 malformed line(s)" in err


# --- 14. and 15. full disks and odd lock files ---


def test_14_a_full_disk_while_safetensors_writes_is_one_line(monkeypatch, tmp_path):
    from safetensors import SafetensorError

    import crossgate.storage as storage
    from crossgate.errors import UserError

    def full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                              '"No space left on device" })')

    monkeypatch.setattr(storage, "save_file", full)
    with pytest.raises(UserError, match="No space left on device.*free some space"):
        storage.save_arrays(tmp_path / "entry", {"x": np.zeros(2, np.float32)}, {})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("kind", ["folder", "loop"])
def test_15_a_lock_that_is_a_folder_or_a_link_loop_is_one_line(capsys, tmp_path, folder, kind):
    lock = tmp_path / "run" / "results.jsonl.lock"
    lock.parent.mkdir()
    if kind == "folder":
        lock.mkdir()
    else:
        lock.symlink_to(lock)
    assert "not the lock file crossgate makes" in run_error(capsys, *bench_argv(tmp_path, folder))


def test_15_a_link_among_the_cache_locks_is_moved_aside(tmp_path):
    from crossgate.extraction import entry_lock

    (tmp_path / "locks").mkdir()
    loop = tmp_path / "locks" / "image-x.lock"
    loop.symlink_to(loop)
    with entry_lock(tmp_path / "image" / "x", tmp_path / "locks"):
        pass
    assert loop.is_file() and not loop.is_symlink()


# --- 16. to 18. fixed-length fields, foreign checkpoints, stray torchrun variables ---


@pytest.mark.parametrize("value", ["0.5", "0.5,0.3,0.2"])
def test_16_a_fixed_length_field_says_so(capsys, tmp_path, folder, value):
    argv = bench_argv(tmp_path, folder)
    argv[argv.index("--methods") + 1] = "ape"
    assert "2 items" in run_error(capsys, *argv, "--ape-weights", value)


def test_16_a_config_built_in_python_is_checked_too(lite_small_features):
    from crossgate.errors import UserError
    from crossgate.methods import create_method
    from crossgate.methods.ape import APEConfig

    f = lite_small_features
    clf = create_method("ape", config=APEConfig(weights=(0.1, 0.2, 0.3)))
    with pytest.raises(UserError, match="2 items"):
        clf.fit(f.train.x, f.train.labels, text=f.text, val=(f.val.x, f.val.labels))


def test_17_a_file_that_is_not_a_checkpoint_is_one_line(capsys, tmp_path, folder):
    bad = tmp_path / "w.pt"
    bad.write_bytes(b"\x80\x04not a pickle at all")
    argv = bench_argv(tmp_path, folder)
    argv[argv.index("--backbone") + 1] = f"openclip:crossgate-tiny/{bad}"
    assert "is not an open_clip checkpoint" in run_error(capsys, *argv)


@pytest.mark.parametrize("env,message", [({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc'"),
                                         ({"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR"),
                                         ({"WORLD_SIZE": "2", "RANK": "5"}, "not below")])
def test_18_torchrun_variables_set_by_something_else(capsys, monkeypatch, tmp_path, folder, env, message):
    for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    err = run_error(capsys, "extract", "--dataset", f"imagefolder:{folder}", "--backbone", "tiny-clip",
                    "--cache-dir", str(tmp_path / "cache"), "--no-progress")
    assert message in err and "torchrun" in err


# --- 19. to 21. messages that say what is wrong ---


def test_19_divergence_without_a_learning_rate_names_the_method_flags(capsys, tmp_path, folder):
    err = run_error(capsys, *bench_argv(tmp_path, folder), "--logreg-l2-grid", "1e30")
    assert "NaN or infinite" in err and "no learning rate" in err and "--logreg-l2-grid" in err


def test_19_a_class_without_a_prompt_is_refused_before_any_fit():
    from crossgate.errors import UserError
    from crossgate.features import TextFeatures
    from crossgate.methods import create_method
    from tests.conftest import blobs

    x, y, text = blobs()
    keep = text.labels != 2
    holed = TextFeatures(x=text.x[keep], native=text.native[keep], labels=text.labels[keep],
                         texts=[t for t, k in zip(text.texts, keep, strict=True) if k])
    with pytest.raises(UserError, match="no prompt for class 2"):
        create_method("zeroshot").fit(x, y, text=holed)


def test_20_gate_joint_bases_without_the_default_candidate_blame_the_right_flag(capsys, tmp_path, folder):
    argv = bench_argv(tmp_path, folder)
    argv[argv.index("--methods") + 1] = "gate-joint"
    assert run(capsys, *argv, "--gate-joint-bases", "zeroshot")[0] == 0  # 'logreg' is skipped: 'ensemble' remains
    err = run_error(capsys, *bench_argv(tmp_path, folder, "run2"), "--methods", "gate-joint", "--gate-joint-bases",
                    "zeroshot", "--gate-joint-candidates", "logreg")
    assert "--gate-joint-bases" in err


def test_21_results_that_is_a_folder_is_said_before_any_fit(capsys, monkeypatch, tmp_path, folder):
    import crossgate.bench as bench

    (tmp_path / "run" / "results.jsonl").mkdir(parents=True)
    monkeypatch.setattr(bench, "run_draw", lambda *a, **k: pytest.fail("fitted before checking the output"))
    err = run_error(capsys, *bench_argv(tmp_path, folder))
    assert "is a folder" in err and "free some space" not in err


# --- 22. to 25. ---


def test_22_a_fifo_given_to_predict_is_named_as_such(capsys, tmp_path, trained):
    model, _, _ = trained
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    assert "not a regular file" in run_error(capsys, "predict", str(model), str(fifo), "--no-progress")


def test_23_classnames_txt_with_a_byte_order_mark(tmp_path, folder):
    from crossgate.datasets.imagefolder import ImageFolderDataset

    (folder / "classnames.txt").write_text("goldfish gold fish\n", encoding="utf-8-sig")
    assert "gold fish" in ImageFolderDataset(folder).classnames


def test_24_the_corrupted_subset_leaves_out_skipped_images(capsys, tmp_path, folder):
    test_files = sorted((folder / "goldfish").glob("*.png"))
    from crossgate.datasets.imagefolder import ImageFolderDataset

    ds = ImageFolderDataset(folder)
    first_test = folder / ds.split("test").paths[0]
    first_test.write_bytes(b"")  # unreadable
    assert test_files
    code, out, err = run(capsys, *bench_argv(tmp_path, folder), "--on-bad-image", "skip", "--corrupt",
                         "gaussian_noise:1", "--corrupt-per-class", "1")
    assert code == 0, err
    rows = read_rows(tmp_path / "run" / "results.jsonl")
    assert {r["n_test"] for r in rows if r.get("corruption")} == {3}


def test_25_no_raw_library_warnings(capsys, tmp_path, caplog):
    import warnings

    from crossgate.methods import create_method
    from crossgate.report import plot_accuracy

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_method("logreg").fit(x, np.arange(30), val=(x, np.arange(30)))  # 1 shot of 30 classes
        plot_accuracy({"m": {1: (50.0, 1.0, 3)}}, "photos \U0001F4F7 · lite")
        big = tmp_path / "big.png"
        Image.new("RGB", (12000, 8000)).save(big)  # 96 megapixels: past PIL's bomb warning
        from crossgate.images import open_rgb

        open_rgb(big, "")
    said = " ".join(r.message for r in caplog.records) + capsys.readouterr().err  # the CLI's handler or pytest's
    assert "cannot draw" in said and "very large image" in said


# --- 26. SIGTERM ends the workers ---


def _children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def _running(pid: int) -> bool:
    try:
        return "\tZ" not in Path(f"/proc/{pid}/status").read_text().split("State:")[1][:4]  # a zombie has ended
    except (OSError, IndexError):
        return False


def test_26_sigterm_ends_the_workers_and_resume_gives_the_same_rows(capsys, tmp_path, folder):
    from crossgate.cli import main

    argv = bench_argv(tmp_path, folder, "whole")
    argv[argv.index("--seeds") + 1] = "1,2,3,4"
    assert main(argv) == 0  # the uninterrupted rows (the same for any --jobs); the features are cached now
    cut = [a if a != str(tmp_path / "whole") else str(tmp_path / "cut") for a in argv]
    cut[cut.index("--jobs") + 1] = "2"
    proc = subprocess.Popen([sys.executable, "-m", "crossgate", *cut], env={**os.environ, "CROSSGATE_OFFLINE": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    workers = set()
    deadline = time.time() + 120
    while time.time() < deadline and len(workers) < 2 and proc.poll() is None:
        workers |= _children(proc.pid)
        time.sleep(0.05)
    assert workers, "no worker started"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 143, proc.stderr.read()
    time.sleep(1)
    assert not [w for w in workers if _running(w)]
    assert main(cut) == 0  # resume

    def strip(r):
        return {k: v for k, v in r.items() if k != "fit_seconds"}

    assert [strip(r) for r in read_rows(tmp_path / "cut" / "results.jsonl")] == \
        [strip(r) for r in read_rows(tmp_path / "whole" / "results.jsonl")]


def test_01_a_results_file_that_is_not_crossgates_is_not_appended_to_or_repaired(capsys, tmp_path, folder):
    (tmp_path / "run").mkdir()
    mine = tmp_path / "run" / "results.jsonl"
    mine.write_text("my own log line\nno newline at the end")
    assert "holds no results row" in run_error(capsys, *bench_argv(tmp_path, folder))
    assert mine.read_text() == "my own log line\nno newline at the end"
