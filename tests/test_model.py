"""Saved models: every method round-trips through safetensors + JSON; train / predict on the command line."""
import json

import numpy as np
import pytest

from crossgate.cli import main
from crossgate.errors import UserError
from crossgate.methods import create_method, list_methods
from crossgate.model import SavedModel, load_model, save_model
from tests.conftest import blobs, make_folder, run, run_error


@pytest.mark.parametrize("method", list_methods())
def test_every_method_round_trips_exactly(tmp_path, method):
    x, y, text = blobs()
    xv, yv, _ = blobs(seed=1)
    xt, _, _ = blobs(per_class=20, seed=2)
    clf = create_method(method, random_state=0).fit(x, y, text=text, val=(xv, yv))
    save_model(tmp_path / "m", SavedModel(clf, method, "tiny-clip", "id-1", list("abcd"), ["{}"]))
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.safetensors"]
    loaded = load_model(tmp_path / "m")
    assert loaded.method == method and loaded.classnames == list("abcd")
    assert type(loaded.classifier) is type(clf)
    np.testing.assert_array_equal(loaded.classifier.predict_proba(xt), clf.predict_proba(xt))
    if hasattr(clf, "explain"):
        for a, b in zip(loaded.classifier.explain(xt), clf.explain(xt), strict=True):
            np.testing.assert_array_equal(a, b)
        assert loaded.classifier.texts_ == clf.texts_


def _model(tmp_path):
    x, y, text = blobs()
    clf = create_method("logreg").fit(x, y, text=text)
    return save_model(tmp_path / "m", SavedModel(clf, "logreg", "tiny-clip", "id-1", list("abcd"), ["{}"]))


def test_damaged_or_foreign_models_are_refused(tmp_path):
    path = _model(tmp_path)
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match="damaged"):
        load_model(path)
    with pytest.raises(UserError, match="does not exist"):
        load_model(tmp_path / "nothing")
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "model.pt").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(UserError, match="not a crossgate model"):
        load_model(tmp_path / "pickled")


def test_backbone_identity_mismatch_is_refused(tmp_path):
    model = load_model(_model(tmp_path))
    model.check_backbone("id-1", "tiny-clip")
    with pytest.raises(UserError, match="predict with --backbone tiny-clip"):
        model.check_backbone("id-2", "lite")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A gate-joint model trained on a tiny image folder with the tiny random CLIP (no weights needed)."""
    root = tmp_path_factory.mktemp("train")
    make_folder(root / "imgs")
    common = ["--cache-dir", str(root / "cache"), "--no-progress"]
    assert main(["train", "--dataset", f"imagefolder:{root / 'imgs'}", "--backbone", "tiny-clip", "--method",
                 "gate-joint", "--shots", "4", "--seed", "1", "--out", str(root / "model"),
                 "--template", "a photo of a {}.", "--template", "a picture of a {}.", *common]) == 0
    return root, common


def test_train_saves_identity_classes_templates_and_metrics(trained):
    root, _ = trained
    meta = json.loads((root / "model" / "model.json").read_text())
    assert meta["method"] == "gate-joint" and meta["backbone"] == "tiny-clip"
    assert meta["classnames"] == ["golden retriever", "goldfish", "tabby cat"]
    assert meta["templates"] == ["a photo of a {}.", "a picture of a {}."]
    assert meta["backbone_identity"].startswith("openclip:") or meta["backbone_identity"]
    assert {"acc_test", "acc_val", "shots", "seed", "split_source"} <= set(meta["info"])
    assert meta["info"]["shots"] == 4 and meta["info"]["n_train"] == 12


def test_predict_prints_top_classes_and_selected_texts(trained, capsys):
    root, common = trained
    images = sorted((root / "imgs" / "goldfish").glob("*.png"))[:2]
    code, out, _ = run(capsys, "predict", str(root / "model"), *map(str, images), "--top", "2", *common)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == str(images[0]) and sum(line.endswith(str(images[1])) for line in lines) == 1
    assert sum("%" in line for line in lines) == 4  # two classes per image
    k = json.loads((root / "model" / "model.json").read_text())["info"]["hparams"]["k"]
    shown = min(3, 6 if k == "all" else k)  # 3 classes x 2 templates in the pool
    assert sum(line.strip().startswith("gate ") for line in lines) == 2 * shown
    code, out, _ = run(capsys, "predict", str(root / "model"), str(root / "imgs" / "goldfish"), "--json", *common)
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 10 and all(len(r["top"]) == 3 and len(r["selected_texts"]) == shown for r in rows)
    probabilities = [c["probability"] for c in rows[0]["top"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6
    assert rows[0]["selected_texts"][0]["text"] in {f"a {v} of a {c}." for v in ("photo", "picture")
                                                    for c in ("golden retriever", "goldfish", "tabby cat")}


def test_predict_bad_input(trained, capsys, tmp_path):
    root, common = trained
    image = str(next((root / "imgs" / "goldfish").glob("*.png")))
    assert "predict with --backbone tiny-clip" in run_error(capsys, "predict", str(root / "model"), image,
                                                            "--backbone", "lite", *common)
    assert "no such image file or folder" in run_error(capsys, "predict", str(root / "model"),
                                                       str(tmp_path / "x.jpg"), *common)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    assert "cannot read image" in run_error(capsys, "predict", str(root / "model"), str(tmp_path / "bad.jpg"),
                                            *common)
    assert "not a crossgate model" in run_error(capsys, "predict", str(tmp_path), image, *common)
