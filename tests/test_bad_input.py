"""Bad input of every kind: one line on stderr naming the problem and the fix, exit status 2, no traceback.

Flag values and unknown names are in test_cli.py; this file covers folders, images, models, caches and
output locations. Images in unusual modes are converted, not errors.
"""
import errno
import json

import numpy as np
import pytest
from PIL import Image

from crossgate.cli import main
from crossgate.images import to_rgb
from tests.conftest import make_folder, run_error


@pytest.fixture()
def env(tmp_path):
    """A good image folder and the flags every command here shares."""
    make_folder(tmp_path / "imgs")
    return tmp_path, ["--cache-dir", str(tmp_path / "cache"), "--no-progress"]


def extract(tmp_path, common, folder=None, *extra):
    return ["extract", "--dataset", f"imagefolder:{folder or tmp_path / 'imgs'}", "--backbone", "tiny-clip",
            *common, *extra]


def _break(folder, name, content: bytes):
    (folder / name).write_bytes(content)
    return name


def test_a_file_instead_of_a_folder(env, capsys):
    tmp_path, common = env
    (tmp_path / "list.txt").write_text("x")
    assert "is a file; imagefolder:PATH takes a folder" in run_error(capsys, *extract(tmp_path, common,
                                                                                      tmp_path / "list.txt"))


def test_an_empty_folder(env, capsys):
    tmp_path, common = env
    (tmp_path / "empty").mkdir()
    assert "has 0 class folders" in run_error(capsys, *extract(tmp_path, common, tmp_path / "empty"))


def test_an_empty_class_name(env, capsys):
    tmp_path, common = env
    (tmp_path / "imgs" / "_").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "_" / "a.png")
    assert "class folder '_'" in run_error(capsys, *extract(tmp_path, common))


def test_corrupt_truncated_and_empty_images_are_all_listed(env, capsys):
    tmp_path, common = env
    folder = tmp_path / "imgs" / "goldfish"
    jpeg = folder / "good.jpg"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(jpeg, quality=95)
    bad = [_break(folder, "corrupt.png", b"\x89PNG not really"),
           _break(folder, "truncated.jpg", jpeg.read_bytes()[:300]),
           _break(folder, "empty.png", b"")]
    err = run_error(capsys, *extract(tmp_path, common))
    assert "3 unreadable image(s)" in err and "--on-bad-image skip" in err
    assert all(f"goldfish/{name}" in err for name in bad)


def test_skip_leaves_bad_images_out_and_says_how_many(env, capsys):
    tmp_path, common = env
    _break(tmp_path / "imgs" / "goldfish", "corrupt.jpg", b"garbage")
    assert main(extract(tmp_path, common, None, "--on-bad-image", "skip")) == 0
    err = capsys.readouterr().err
    assert "skipped 1 unreadable image(s)" in err and "goldfish/corrupt.jpg" in err
    # the cache remembers the skip: running again without --on-bad-image skip names the file
    assert "were skipped as unreadable by an earlier run: goldfish/corrupt.jpg" in run_error(
        capsys, *extract(tmp_path, common))
    argv = ["bench", "--dataset", f"imagefolder:{tmp_path / 'imgs'}", "--backbone", "tiny-clip", "--shots", "2",
            "--seeds", "1", "--methods", "logreg", "--out", str(tmp_path / "run"), "--jobs", "1",
            "--on-bad-image", "skip", *common]
    assert main(argv) == 0


def test_fewer_images_than_shots_names_the_classes(env, capsys):
    tmp_path, common = env
    err = run_error(capsys, "bench", "--dataset", f"imagefolder:{tmp_path / 'imgs'}", "--backbone", "tiny-clip",
                    "--shots", "7", "--methods", "logreg", "--out", str(tmp_path / "run"), *common)
    assert "3 classes have fewer than 7 images in the train split: golden retriever, goldfish, tabby cat" in err


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "I;16", "LA", "1", "F"])
def test_unusual_image_modes_are_converted(env, mode):
    tmp_path, common = env
    rng = np.random.default_rng(0)
    rgb = Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8))
    if mode == "I;16":
        image = Image.fromarray((rng.random((16, 16)) * 65535).astype(np.uint16))
    elif mode == "F":
        image = Image.fromarray(rng.random((16, 16)).astype(np.float32))
    else:
        image = rgb.convert(mode)
    suffix = ".jpg" if mode == "CMYK" else ".tiff" if mode == "F" else ".png"
    image.save(tmp_path / "imgs" / "goldfish" / f"odd{suffix}")
    assert main(extract(tmp_path, common)) == 0
    converted = to_rgb(Image.open(tmp_path / "imgs" / "goldfish" / f"odd{suffix}"))
    assert converted.mode == "RGB" and converted.size == (16, 16)
    if mode in ("I;16", "F"):  # scaled to the value range, not clipped to white
        assert 0 < np.asarray(converted).mean() < 255 and np.asarray(converted).std() > 20


def test_transparent_pixels_become_white_not_black():
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(to_rgb(clear)).min() == 255


def _saved_model(tmp_path, common):
    assert main(["train", "--dataset", f"imagefolder:{tmp_path / 'imgs'}", "--backbone", "tiny-clip", "--method",
                 "logreg", "--out", str(tmp_path / "model"), *common]) == 0
    return tmp_path / "model", str(next((tmp_path / "imgs" / "goldfish").glob("*.png")))


def test_damaged_models(env, capsys):
    tmp_path, common = env
    model, image = _saved_model(tmp_path, common)
    weights = model / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])  # truncated
    assert "is damaged" in run_error(capsys, "predict", str(model), image, *common)
    weights.write_bytes(good[:-4] + b"\0\0\0\0")  # tampered
    assert "is damaged" in run_error(capsys, "predict", str(model), image, *common)
    weights.write_bytes(good)
    (model / "model.json").write_text("{ not json")
    assert "model.json is not valid JSON" in run_error(capsys, "predict", str(model), image, *common)
    (model / "model.json").unlink()
    (model / "model.pt").write_bytes(b"\x80\x04\x95pickled")  # a pickle is never loaded
    assert "is not a crossgate model" in run_error(capsys, "predict", str(model), image, *common)


def test_model_with_another_feature_size(env, capsys):
    tmp_path, common = env
    model, image = _saved_model(tmp_path, common)
    meta = json.loads((model / "model.json").read_text())
    from crossgate.methods import create_method
    from crossgate.model import SavedModel, save_model
    from tests.conftest import blobs

    x, y, text = blobs(n_classes=3, dim=16)
    clf = create_method("logreg").fit(x, y, text=text)  # 16-d, but saved as if fitted on tiny-clip features
    save_model(tmp_path / "other", SavedModel(clf, "logreg", "tiny-clip", meta["backbone_identity"],
                                              meta["classnames"], meta["templates"]))
    assert "is expecting 16 features" in run_error(capsys, "predict", str(tmp_path / "other"), image,
                                                               *common)


def test_read_only_cache_dir(env, capsys):
    tmp_path, common = env
    err = run_error(capsys, *extract(tmp_path, ["--cache-dir", "/sys/crossgate-cache", "--no-progress"]))
    assert "cache directory /sys/crossgate-cache is not writable" in err and "--cache-dir" in err


def test_cache_dir_below_a_file(env, capsys):
    tmp_path, common = env
    (tmp_path / "f").write_text("x")
    err = run_error(capsys, *extract(tmp_path, ["--cache-dir", str(tmp_path / "f" / "c"), "--no-progress"]))
    assert "is not writable (Not a directory)" in err


def test_full_cache_dir(env, capsys, monkeypatch):
    import crossgate.storage as storage

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage, "save_file", no_space)
    tmp_path, common = env
    err = run_error(capsys, *extract(tmp_path, common))
    assert "No space left on device" in err and "free some space" in err
    assert not [p for p in (tmp_path / "cache").rglob("*.tmp")]  # no temporary files left behind


def test_output_folder_below_a_file(env, capsys):
    tmp_path, common = env
    (tmp_path / "f").write_text("x")
    err = run_error(capsys, "bench", "--dataset", f"imagefolder:{tmp_path / 'imgs'}", "--backbone", "tiny-clip",
                    "--shots", "2", "--seeds", "1", "--methods", "zeroshot", "--out", str(tmp_path / "f" / "o"),
                    *common)
    assert "output folder" in err and "is not writable" in err


@pytest.mark.parametrize("argv, message", [
    (["extract", "--workers", "-1"], "expected a positive integer, got -1"),
    (["extract", "--on-bad-image", "ignore"], "invalid choice: 'ignore'"),
    (["extract", "--template", "a photo"], "exactly one plain {} for the class name"),
    (["extract", "--template", "a {} of {}"], "exactly one plain {} for the class name"),
    (["extract", "--template", "a photo of a {}."], "--template applies to imagefolder:PATH datasets"),
    (["train", "--out", "m", "--shots", "0"], "expected a positive integer, got 0"),
    (["train", "--out", "m", "--method", "magic"], "unknown method 'magic'"),
    (["predict", "/nonexistent/model", "x.jpg"], "model /nonexistent/model does not exist"),
    (["predict", "m", "x.jpg", "--top", "0"], "expected a positive integer, got 0"),
    (["split", "show", "fashion-mnist", "--split", "test", "--shots", "1"], "the test split has no few-shot draw"),
])
def test_more_bad_flags(capsys, argv, message):
    assert message in run_error(capsys, *argv)


def test_large_jpegs_are_decoded_at_a_reduced_scale_small_ones_exactly(tmp_path):
    from crossgate.images import DRAFT_MIN_SIDE, open_rgb

    rng = np.random.default_rng(0)
    for side, expected in ((2 * DRAFT_MIN_SIDE + 100, None), (600, 600)):
        path = tmp_path / f"{side}.jpg"
        Image.fromarray((rng.random((side, side + 50, 3)) * 255).astype(np.uint8)).save(path, quality=90)
        image = open_rgb(path, "")
        if expected is None:  # halved by DCT scaling, never below the minimum side
            assert DRAFT_MIN_SIDE <= min(image.size) < side
        else:
            assert image.size == (side + 50, side)


def test_skipped_images_and_published_splits(tmp_path, capsys):
    from tests.conftest import make_pets_like_root

    split, index = make_pets_like_root(tmp_path / "data")
    images = tmp_path / "data" / "oxford_pets" / "images"
    unused = next(rel for i, (rel, _, _) in enumerate(split["train"]) if i not in index["train"]["indices"])
    (images / unused).write_bytes(b"broken")
    argv = ["bench", "--dataset", "oxford_pets", "--backbone", "tiny-clip", "--shots", "2", "--seeds", "1",
            "--methods", "logreg", "--data-root", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"),
            "--no-progress", "--jobs", "1", "--on-bad-image", "skip"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0  # the published images map onto the kept rows
    from crossgate.results import read_rows

    row = read_rows(tmp_path / "a" / "results.jsonl")[0]
    assert row["split_source"] == "published:shot_2-seed_1.json" and row["n_train"] == 6
    used = split["train"][index["train"]["indices"][0]][0]
    (images / used).write_bytes(b"broken")
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "b"), "--cache-dir", str(tmp_path / "cache2")]) == 2
    err = capsys.readouterr().err.splitlines()  # the skip warnings, then the error
    assert err[-1].startswith("crossgate: error: 1 published few-shot training image(s) were skipped as "
                              f"unreadable: {used}") and "Traceback" not in "".join(err)


def test_an_unreachable_hub_is_one_line_and_fast(capsys, monkeypatch, tmp_path):
    """Offline (HF_HUB_OFFLINE, or huggingface.co unreachable), hub weights that are not cached fail at once,
    in one line naming the ways out, instead of a minute of retry warnings."""
    import time

    from crossgate.encoders import openclip

    monkeypatch.setattr(openclip, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # unreachable, not offline by choice
    monkeypatch.delenv("CROSSGATE_OFFLINE", raising=False)
    start = time.perf_counter()
    folder = make_folder(tmp_path / "imgs")
    argv = ["extract", "--dataset", f"imagefolder:{folder}", "--backbone", "openclip:RN50/openai",
            "--cache-dir", str(tmp_path / "cache")]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and time.perf_counter() - start < 60
    assert err.count("\n") == 1 and "unreachable" in err and "--backbone lite" in err
    code = main([*argv, "--offline"])  # offline by choice says so (issue 23), not "unreachable"
    err = capsys.readouterr().err
    assert code == 2 and "--offline (or HF_HUB_OFFLINE) forbids downloading" in err and "unreachable" not in err
