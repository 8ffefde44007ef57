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


@pytest.fixture(scope="session")
def lite_val_features(lite, embedded, session_cache):
    """Real lite features of the embedded default's 160 validation images and its prompts, unit-norm."""
    import torch

    from crossgate.cache import FeatureCache

    cache = FeatureCache(session_cache, progress=False)
    val = cache.image_features(lite, embedded, "val")
    text = cache.text_features(lite, embedded)

    def unit(a):
        return torch.nn.functional.normalize(torch.from_numpy(a), dim=1)

    return unit(val.x), torch.from_numpy(val.labels), unit(text.x), torch.from_numpy(text.labels)
