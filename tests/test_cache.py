import json

import numpy as np
import pytest

from crossgate.cache import FeatureCache
from crossgate.settings import Settings
from crossgate.storage import load_arrays, save_arrays
from tests.conftest import CountingEncoder


def test_roundtrip_and_manifest(tmp_path):
    arrays = {"x": np.arange(12, dtype=np.float32).reshape(3, 4), "labels": np.array([0, 1, 1])}
    save_arrays(tmp_path / "e", arrays, {"kind": "test"})
    loaded, manifest = load_arrays(tmp_path / "e")
    assert np.array_equal(loaded["x"], arrays["x"]) and np.array_equal(loaded["labels"], arrays["labels"])
    assert manifest["tensors"]["x"] == {"shape": [3, 4], "dtype": "float32"} and len(manifest["sha256"]) == 64
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


def test_interrupted_write_is_not_read_back(tmp_path, monkeypatch):
    from crossgate import storage

    def crash(tensors, filename):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(storage, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_arrays(tmp_path / "e", {"x": np.ones((2, 2), np.float32)}, {})
    assert load_arrays(tmp_path / "e") is None
    assert list(tmp_path.iterdir()) == []  # the temporary file is removed too


def test_tensor_file_without_manifest_or_with_wrong_checksum_is_a_miss(tmp_path):
    save_arrays(tmp_path / "e", {"x": np.ones((4, 4), np.float32)}, {})
    tensor = tmp_path / "e.safetensors"
    # a crash between the two renames leaves a tensor file with no manifest
    manifest = (tmp_path / "e.json").read_text()
    (tmp_path / "e.json").unlink()
    assert load_arrays(tmp_path / "e") is None
    # a tensor file cut short after its manifest was written fails the checksum
    (tmp_path / "e.json").write_text(manifest)
    tensor.write_bytes(tensor.read_bytes()[:-8])
    assert load_arrays(tmp_path / "e") is None
    (tmp_path / "e.json").write_text("{not json")
    assert load_arrays(tmp_path / "e") is None


def test_hit_does_no_encoder_work(tmp_path, tiny, embedded):
    counting = CountingEncoder(tiny)
    cache = FeatureCache(tmp_path, progress=False)
    first = cache.image_features(counting, embedded, "val")
    first_text = cache.text_features(counting, embedded)
    assert counting.images == len(embedded.split("val")) and counting.texts == len(first_text.texts)
    counting.images = counting.texts = 0
    second = FeatureCache(tmp_path, progress=False).image_features(counting, embedded, "val")
    second_text = cache.text_features(counting, embedded)
    assert counting.images == 0 and counting.texts == 0
    assert np.array_equal(first.x, second.x) and np.array_equal(first_text.x, second_text.x)
    manifest = json.loads(next((tmp_path / "features" / "image").glob("*.json")).read_text())
    assert manifest["key"] == {"encoder": tiny.identity, "dataset": embedded.identity, "split": "val",
                               "view": "center", "pixels": "exif"}
    assert {"crossgate", "torch", "numpy"} <= set(manifest["versions"])


def test_corrupt_entry_is_recomputed(tmp_path, tiny, embedded):
    cache = FeatureCache(tmp_path, progress=False)
    good = cache.image_features(tiny, embedded, "val")
    tensor = next((tmp_path / "features" / "image").glob("*.safetensors"))
    tensor.write_bytes(b"\0" * tensor.stat().st_size)
    counting = CountingEncoder(tiny)
    again = cache.image_features(counting, embedded, "val")
    assert counting.images == len(good.labels) and np.array_equal(good.x, again.x)


def test_features_are_deterministic_float32(tmp_path, tiny, embedded):
    feats = FeatureCache(tmp_path, progress=False).image_features(tiny, embedded, "val")
    assert feats.x.dtype == np.float32 and feats.x.shape == (len(embedded.split("val")), tiny.image_dim)
    assert np.isfinite(feats.x).all()


def test_cache_location_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CROSSGATE_CACHE", str(tmp_path / "elsewhere"))
    assert Settings().cache_dir == tmp_path / "elsewhere"
    assert Settings().data_root == tmp_path / "elsewhere" / "data"
    monkeypatch.setenv("CROSSGATE_DATA", str(tmp_path / "data"))
    assert Settings().data_root == tmp_path / "data"


def test_flip_view_is_the_mirrored_image_and_has_its_own_entry(tmp_path, tiny):
    from crossgate.datasets import ArrayDataset

    rng = np.random.default_rng(0)
    images = (rng.random((6, 20, 20, 3)) * 255).astype(np.uint8)
    labels = np.array([0, 0, 0, 1, 1, 1])

    def dataset(name, imgs):
        return ArrayDataset(name, ["a", "b"], ["{}"], {s: (imgs, labels) for s in ("train", "val", "test")}, name)

    cache = FeatureCache(tmp_path, progress=False)
    feats = cache.features(tiny, dataset("plain", images), flip=True)
    mirrored = cache.features(tiny, dataset("mirrored", images[:, :, ::-1].copy()))
    assert feats.train_views() == ["center", "flip"] and mirrored.train_views() == ["center"]
    np.testing.assert_array_equal(feats.train_flip.x, mirrored.train.x)
    assert not np.allclose(feats.train_flip.x, feats.train.x)
    x, y = feats.few_shot_train(np.array([0, 3]))
    np.testing.assert_array_equal(x, np.concatenate([feats.train.x[[0, 3]], feats.train_flip.x[[0, 3]]]))
    assert y.tolist() == [0, 1, 0, 1]
    keys = [json.loads(p.read_text())["key"] for p in (tmp_path / "features" / "image").glob("*.json")]
    assert sorted(k["view"] for k in keys if k["dataset"].startswith("plain")) == ["center"] * 3 + ["flip"]


def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path):
    import os

    from crossgate.storage import atomic_write_text

    old = os.umask(0o022)
    try:
        save_arrays(tmp_path / "e", {"x": np.zeros(2, np.float32)}, {})
        atomic_write_text(tmp_path / "t.txt", "hi")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {"e.safetensors": 0o644, "e.json": 0o644, "t.txt": 0o644}
