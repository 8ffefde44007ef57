"""torchrun with 2 CPU processes (gloo) shares an extraction and writes the cache entries one process
would write, bit for bit."""
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import make_folder

ROOT = Path(__file__).resolve().parents[1]


def _extract(tmp_path, cache, *launcher):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CROSSGATE_CHUNK_IMAGES": "8", "OMP_NUM_THREADS": "1"}
    argv = [*launcher, "-m", "crossgate", "extract", "--dataset", f"imagefolder:{tmp_path / 'imgs'}", "--backbone",
            "tiny-clip", "--batch-size", "4", "--flip", "--cache-dir", str(cache), "--no-progress"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _entries(cache):
    out = {}
    for manifest in sorted((cache / "features" / "image").glob("*.json")):
        meta = json.loads(manifest.read_text())
        out[manifest.stem] = (meta["key"], meta["sha256"], manifest.with_suffix(".safetensors").read_bytes())
    return out


def test_torchrun_two_processes_equal_one_process_bit_for_bit(tmp_path):
    make_folder(tmp_path / "imgs", per_class=20)  # train 36 images: 5 chunks of 8, shared out to 2 ranks
    _extract(tmp_path, tmp_path / "one", sys.executable)
    out = _extract(tmp_path, tmp_path / "two", sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc-per-node", "2")
    assert "2 process(es)" in out
    one, two = _entries(tmp_path / "one"), _entries(tmp_path / "two")
    assert len(one) == 4 and one.keys() == two.keys()  # train, val, test and the flipped train view
    for name in one:
        assert one[name] == two[name], f"entry {one[name][0]} differs"
    assert not list((tmp_path / "two").rglob("*.partial-*"))
