"""Fixtures and helpers shared by the test modules (import helpers with `from tests.conftest import ...`)."""
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crossgate.cli import main
from crossgate.features import TextFeatures

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for a hub

SHARED = Path(__file__).resolve().parents[2] / "shared"
LIN_FIXTURES = SHARED / "fixtures" / "lin-cross-modal"


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One feature cache for the whole session, so real encoders fit their text map once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def lite(session_cache):
    from crossgate.encoders import create_encoder

    return create_encoder("lite", cache_dir=session_cache)


@pytest.fixture(scope="session")
def tiny():
    from crossgate.encoders import create_encoder

    return create_encoder("tiny-clip")


@pytest.fixture(scope="session")
def embedded():
    from crossgate.datasets import load_dataset

    return load_dataset("fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test reads or writes the user's real cache."""
    monkeypatch.setenv("CROSSGATE_CACHE", str(tmp_path / "default-cache"))
    monkeypatch.setenv("CROSSGATE_OFFLINE", "1")  # tests never download; test_download serves files locally


@pytest.fixture(scope="session")
def lite_small_features(lite, embedded, session_cache):
    """Real lite features of a small class-balanced slice of the embedded default (8 train-pool, 4 val-pool
    and 30 test images per class), so tests run real methods on real features in seconds."""
    import numpy as np

    from crossgate.cache import FeatureCache
    from crossgate.datasets import ArrayDataset

    def take(split, per_class):
        images = np.stack([np.asarray(embedded.split(split).load_image(i).convert("L"))
                           for i in range(len(embedded.split(split)))])
        labels = embedded.split(split).labels
        keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
        return images[keep], labels[keep]

    small = ArrayDataset("fashion-mnist-small", embedded.classnames, embedded.templates,
                         {"train": take("train", 8), "val": take("val", 4), "test": take("test", 30)},
                         content_digest=embedded.identity.split("@")[1] + "-small-8-4-30")
    return FeatureCache(session_cache, progress=False).features(lite, small)


@pytest.fixture(scope="session")
def lite_val_features(lite_small_features):
    """Unit-norm real lite features of 120 images (train + val of the small slice) and the prompts."""
    import torch

    f = lite_small_features

    def unit(a):
        return torch.nn.functional.normalize(torch.from_numpy(a), dim=1)

    x = unit(__import__("numpy").concatenate([f.train.x, f.val.x]))
    y = torch.from_numpy(__import__("numpy").concatenate([f.train.labels, f.val.labels]))
    return x, y, unit(f.text.x), torch.from_numpy(f.text.labels)


# --- helpers shared by several test modules ---


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_error(capsys, *argv):
    """A user error: exit status 2 and exactly one line on stderr, no traceback."""
    with pytest.raises(SystemExit) as exc:
        code = main(list(argv))
        raise SystemExit(code)
    out, err = capsys.readouterr()
    assert exc.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def blobs(n_classes=4, per_class=8, dim=16, seed=0, spread=0.3):
    """Class clusters around random unit directions, plus matching 'text' features (the directions)."""
    centers = np.random.default_rng(1234).normal(size=(n_classes, dim))  # the same classes for every seed
    rng = np.random.default_rng(seed)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    labels = np.repeat(np.arange(n_classes), per_class)
    x = (centers[labels] + spread * rng.normal(size=(len(labels), dim))).astype(np.float32)
    text_x = np.repeat(centers, 2, axis=0).astype(np.float32) + 0.05 * rng.normal(size=(2 * n_classes, dim))
    text = TextFeatures(x=text_x.astype(np.float32), native=text_x.astype(np.float32),
                        labels=np.repeat(np.arange(n_classes), 2),
                        texts=[f"t{i}" for i in range(2 * n_classes)])
    return x, labels, text


def make_folder(root, classes=("golden_retriever", "tabby_cat", "goldfish"), per_class=10, presplit=False):
    rng = np.random.default_rng(0)
    for label, name in enumerate(classes):
        for i in range(per_class):
            folder = root / (("train" if i < 6 else "val" if i < 8 else "test") if presplit else "") / name
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (rng.random((16, 16, 3)) * 80 + 80 * label).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def make_pets_like_root(root, per_split=(6, 4, 5), n_classes=3, index_shots=2):
    """A tiny folder laid out as CoOp's Oxford Pets: real JPEG files, a split file and a published index."""
    import json

    from PIL import Image

    rng = np.random.default_rng(0)
    names = ["Abyssinian", "american_bulldog", "Bengal"][:n_classes]
    (root / "oxford_pets" / "images").mkdir(parents=True)
    split = {}
    for split_name, per_class in zip(("train", "val", "test"), per_split, strict=True):
        items = []
        for label, name in enumerate(names):
            for i in range(per_class):
                rel = f"{name}_{split_name}{i}.jpg"
                pixels = (rng.random((20, 24, 3)) * 60 + 60 * label).astype(np.uint8)
                Image.fromarray(pixels).save(root / "oxford_pets" / "images" / rel, quality=90)
                items.append([rel, label, name.lower()])
        split[split_name] = items
    (root / "oxford_pets" / "split_zhou_OxfordPets.json").write_text(json.dumps(split))
    index = {}
    for split_name, k in (("train", index_shots), ("val", min(index_shots, 4))):
        # the last k images of every class: a choice crossgate's sampler would not make by itself
        picks = [i for c in range(n_classes)
                 for i in [j for j, item in enumerate(split[split_name]) if item[1] == c][-k:]]
        index[split_name] = {"indices": picks, "data": [
            {"impath": f"./data/oxford_pets/images/{split[split_name][i][0]}", "label": split[split_name][i][1],
             "classname": split[split_name][i][2]} for i in picks]}
    (root / "indices" / "oxford_pets").mkdir(parents=True)
    (root / "indices" / "oxford_pets" / f"shot_{index_shots}-seed_1.json").write_text(json.dumps(index))
    return split, index


class CountingEncoder:
    """Wraps an encoder and counts the images and texts it is asked to encode."""

    def __init__(self, inner):
        self.inner, self.images, self.texts = inner, 0, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_images(self, pixels):
        self.images += len(pixels)
        return self.inner.encode_images(pixels)

    def encode_texts_both(self, texts):
        self.texts += len(texts)
        return self.inner.encode_texts_both(texts)

