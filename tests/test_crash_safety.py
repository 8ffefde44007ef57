"""kill -9 during extraction or bench, then rerun: it resumes, and the result equals an uninterrupted run's.
Two processes extracting the same features at once leave one valid cache entry."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from crossgate.cache import FeatureCache
from crossgate.datasets import load_dataset
from crossgate.results import read_rows
from crossgate.storage import load_arrays
from tests.conftest import CountingEncoder, make_folder

ROOT = Path(__file__).resolve().parents[1]

# extract the train split of an image folder with tiny-clip, slowly (0.15 s per batch of 4), in chunks of 8
SLOW_EXTRACT = textwrap.dedent("""
    import sys, time
    from crossgate.cache import FeatureCache
    from crossgate.datasets import load_dataset
    from crossgate.encoders import create_encoder
    encoder = create_encoder("tiny-clip")
    encode = encoder.encode_images
    encoder.encode_images = lambda pixels: (time.sleep(0.15), encode(pixels))[1]
    cache = FeatureCache(sys.argv[2], batch_size=4, progress=False, chunk_images=8)
    cache.image_features(encoder, load_dataset("imagefolder:" + sys.argv[1]), "train")
""")


def _spawn(*args, code=SLOW_EXTRACT):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _wait_for(predicate, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _entry(cache_dir):
    (manifest,) = (Path(cache_dir) / "features" / "image").glob("*.json")
    return load_arrays(manifest.with_suffix(""))[0]


def test_kill_during_extraction_then_rerun_resumes_and_equals_an_uninterrupted_run(tmp_path, tiny):
    make_folder(tmp_path / "imgs", per_class=20)  # 36 training images: 5 chunks of 8 (the last 4)
    killed = _spawn(tmp_path / "imgs", tmp_path / "cache")
    chunk_files = lambda: list((tmp_path / "cache").rglob("chunk-*.json"))  # noqa: E731
    _wait_for(lambda: len(chunk_files()) >= 2, killed)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    finished = len(chunk_files())
    assert 2 <= finished < 5 and not list((tmp_path / "cache" / "features" / "image").glob("*.safetensors"))

    counting = CountingEncoder(tiny)
    dataset = load_dataset(f"imagefolder:{tmp_path / 'imgs'}")
    resumed = FeatureCache(tmp_path / "cache", batch_size=4, progress=False, chunk_images=8).image_features(
        counting, dataset, "train")
    assert counting.images == 36 - 8 * finished  # only the chunks the killed run had not finished
    clean = FeatureCache(tmp_path / "clean", batch_size=4, progress=False, chunk_images=8).image_features(
        tiny, dataset, "train")
    np.testing.assert_array_equal(resumed.x, clean.x)
    np.testing.assert_array_equal(resumed.labels, clean.labels)
    assert not list((tmp_path / "cache").rglob("*.partial-*")) and not list((tmp_path / "cache").rglob("*.tmp"))


def test_two_processes_extracting_at_once_leave_one_valid_entry(tmp_path, tiny):
    make_folder(tmp_path / "imgs", per_class=12)
    first, second = _spawn(tmp_path / "imgs", tmp_path / "cache"), _spawn(tmp_path / "imgs", tmp_path / "cache")
    for p in (first, second):
        assert p.wait(timeout=120) == 0, p.stderr.read().decode()[-2000:]
    entries = list((tmp_path / "cache" / "features" / "image").glob("*.safetensors"))
    assert len(entries) == 1 and not list((tmp_path / "cache").rglob("*.partial-*"))
    dataset = load_dataset(f"imagefolder:{tmp_path / 'imgs'}")
    clean = FeatureCache(tmp_path / "clean", batch_size=4, progress=False).image_features(tiny, dataset, "train")
    np.testing.assert_array_equal(_entry(tmp_path / "cache")["x"], clean.x)


BENCH = ["-m", "crossgate", "bench", "--backbone", "tiny-clip", "--shots", "1,2", "--seeds", "1,2",
         "--methods", "gate,logreg", "--jobs", "1", "--no-progress", "--gate-epochs", "3"]


def _bench(tmp_path, out):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    argv = [sys.executable, *BENCH, "--dataset", f"imagefolder:{tmp_path / 'imgs'}", "--cache-dir",
            str(tmp_path / "cache"), "--out", str(out)]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _comparable(rows):
    return [{k: v for k, v in r.items() if k not in ("fit_seconds", "git_commit")} for r in rows]


def test_kill_during_bench_then_rerun_gives_the_uninterrupted_rows(tmp_path):
    make_folder(tmp_path / "imgs", per_class=10)
    clean = _bench(tmp_path, tmp_path / "clean")  # also fills the feature cache
    assert clean.wait(timeout=300) == 0, clean.stderr.read().decode()[-2000:]
    killed = _bench(tmp_path, tmp_path / "run")
    results = tmp_path / "run" / "results.jsonl"
    _wait_for(lambda: results.is_file() and len(results.read_text().splitlines()) >= 1, killed)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    assert len(read_rows(results)) < 8  # it was stopped part way
    rerun = _bench(tmp_path, tmp_path / "run")
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read().decode()[-2000:]
    assert _comparable(read_rows(results)) == _comparable(read_rows(tmp_path / "clean" / "results.jsonl"))
    assert all(json.loads(line) for line in results.read_text().splitlines())
