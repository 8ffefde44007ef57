import os
from pathlib import Path

import pytest

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
