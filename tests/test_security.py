"""Nothing loaded from disk is unpickled: safetensors and JSON only; torch.load only with weights_only=True."""
import hashlib
import json
import pickle
import re
from pathlib import Path

import numpy as np

from crossgate.model import load_model
from crossgate.storage import load_arrays, save_arrays

SRC = Path(__file__).resolve().parents[1] / "src" / "crossgate"


class _Payload:
    """Unpickling this creates a marker file: proof that something executed code from a data file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def test_source_never_unpickles():
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import pickle|from pickle|import dill|import joblib)", text, re.M), path
        assert "allow_pickle=True" not in text, path
        for call in re.findall(r"torch\.load\(.*", text):  # the rest of the line
            assert "weights_only=True" in call, f"{path}: {call}"


def _pickled_entry(stem: Path, marker: Path):
    """A cache entry whose tensor file is a pickle, with a manifest whose checksum matches it."""
    save_arrays(stem, {"x": np.zeros((2, 2), np.float32)}, {"kind": "image"})
    tensor = stem.with_name(stem.name + ".safetensors")
    tensor.write_bytes(pickle.dumps(_Payload(marker)))
    manifest = json.loads(stem.with_name(stem.name + ".json").read_text())
    manifest["sha256"] = hashlib.sha256(tensor.read_bytes()).hexdigest()
    stem.with_name(stem.name + ".json").write_text(json.dumps(manifest))


def test_a_pickle_posing_as_a_cache_entry_is_a_miss_and_never_runs(tmp_path):
    marker = tmp_path / "marker"
    _pickled_entry(tmp_path / "entry", marker)
    assert load_arrays(tmp_path / "entry") is None
    assert not marker.exists()


def test_a_pickle_posing_as_a_model_is_refused_and_never_runs(tmp_path):
    import pytest

    from crossgate.errors import UserError

    marker = tmp_path / "marker"
    (tmp_path / "m").mkdir()
    _pickled_entry(tmp_path / "m" / "model", marker)
    with pytest.raises(UserError, match="damaged"):
        load_model(tmp_path / "m")
    assert not marker.exists()
