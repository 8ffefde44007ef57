"""Issue 22, item 2: description banks (--prompts templates|cupl|FILE.json): read whole and checked, every
text-reading method reads them, rows record the bank and its digest, resume refuses a change."""
import hashlib
import json

import numpy as np
import pytest

import crossgate.datasets.download as dl
from crossgate.errors import UserError
from crossgate.results import read_rows
from tests.conftest import SHARED, make_folder, run, run_error

CUPL = SHARED / "fixtures" / "cupl-cifar10" / "CuPL_prompts_cifar10.json"


def _folder(tmp_path):
    make_folder(tmp_path / "photos", classes=("dog", "cat", "truck"))
    return f"imagefolder:{tmp_path / 'photos'}"


def _bank(tmp_path, content) -> str:
    path = tmp_path / "bank.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "must be a JSON object"), ("{}", "an empty one"), ("{not json", "not valid JSON"),
    ({"dog": "a dog", "cat": ["x"], "truck": ["y"]}, "non-empty list"),
    ({"dog": [""], "cat": ["x"], "truck": ["y"]}, "non-empty list"),
    ({"dog": ["a dog"], "cat": ["a cat"]}, "no descriptions of 1 class(es) ('truck')"),
    ({"Dog": ["a"], "dog": ["b"], "cat": ["c"], "truck": ["d"]}, "keep one")])
def test_a_bank_of_the_wrong_shape_is_one_line(capsys, tmp_path, content, message):
    err = run_error(capsys, "bench", "--dataset", _folder(tmp_path), "--backbone", "tiny-clip", "--methods", "zeroshot",
                    "--out", str(tmp_path / "run"), "--prompts", _bank(tmp_path, content))
    assert message in err


def test_a_bank_replaces_the_templates_for_zero_shot_and_the_gate(tmp_path):
    from crossgate.datasets import load_dataset
    from crossgate.methods import create_method
    from crossgate.pipeline import load_features
    from crossgate.settings import Settings

    bank = {"dog": ["a furry dog.", "a dog with a wagging tail."], "Cat": ["a cat that purrs."],
            "truck": ["a big truck.", "a truck on a road.", "a red truck."], "extra": ["ignored"]}
    name, path = _folder(tmp_path), _bank(tmp_path, bank)
    dataset = load_dataset(name, prompts=path)
    texts, labels = dataset.prompts()
    assert dataset.classnames == ["cat", "dog", "truck"]  # folders in sorted order
    assert texts == ["a cat that purrs.", "a furry dog.", "a dog with a wagging tail.", "a big truck.",
                     "a truck on a road.", "a red truck."] and list(labels) == [0, 1, 1, 2, 2, 2]
    assert dataset.prompt_source == {"prompts": "file:bank.json", "sha256": hashlib.sha256(
        (tmp_path / "bank.json").read_bytes()).hexdigest()}
    settings = Settings(cache_dir=tmp_path / "cache", progress=False)
    _, _, feats = load_features(name, "tiny-clip", settings, prompts=path)
    assert feats.text.texts == texts
    # zero-shot: per class the mean of its unit-norm description features (an independent computation)
    unit = feats.text.x / np.linalg.norm(feats.text.x, axis=1, keepdims=True)
    means = np.stack([unit[labels == c].mean(0) for c in range(3)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    zs = create_method("zeroshot").fit(feats.train.x, feats.train.labels, text=feats.text)
    x = feats.test.x / np.linalg.norm(feats.test.x, axis=1, keepdims=True)
    np.testing.assert_array_equal(zs.predict(feats.test.x), (x @ means.T).argmax(1))
    gate = create_method("gate", random_state=0).fit(feats.train.x, feats.train.labels, text=feats.text)
    assert gate.texts_ == texts  # the gate selects among the descriptions


def test_rows_record_the_bank_and_resume_refuses_another(capsys, tmp_path):
    name = _folder(tmp_path)
    argv = ["bench", "--dataset", name, "--backbone", "tiny-clip", "--shots", "1", "--seeds", "1", "--methods",
            "zeroshot", "--jobs", "1", "--no-progress", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / "run")]
    path = _bank(tmp_path, {"dog": ["a dog."], "cat": ["a cat."], "truck": ["a truck."]})
    assert run(capsys, *argv, "--prompts", path)[0] == 0
    row = read_rows(tmp_path / "run" / "results.jsonl")[0]
    assert row["prompts"]["prompts"] == "file:bank.json" and len(row["prompts"]["sha256"]) == 64
    assert "prompts" in run_error(capsys, *argv, "--methods", "zeroshot,logreg")  # templates now: refused


def test_cupl_downloads_the_published_bank_by_checksum_and_says_so_offline(capsys, tmp_path, monkeypatch):
    from crossgate.datasets import load_dataset
    from crossgate.settings import Settings

    if not CUPL.is_file():
        pytest.skip("../shared/fixtures/cupl-cifar10 is not beside this clone (CI has it)")
    from tests.test_download import Server

    server = Server()
    try:
        server.files["cupl.json"] = CUPL.read_bytes()
        entry = {"url": server.url + "cupl.json", "path": "prompts/cupl/fashion-mnist.json",
                 "sha256": hashlib.sha256(CUPL.read_bytes()).hexdigest(), "role": "prompts"}
        monkeypatch.setattr(dl, "_table", lambda: {"fashion-mnist": {"files": [], "indices": {}, "cupl": entry}})
        with pytest.raises(UserError, match="downloads are off"):
            load_dataset("fashion-mnist", Settings(data_root=tmp_path, offline=True), prompts="cupl")
        # the CIFAR-10 bank has no Fashion-MNIST classes: downloaded, verified, then refused by name
        with pytest.raises(UserError, match="no descriptions of 10 class"):
            load_dataset("fashion-mnist", Settings(data_root=tmp_path, offline=False), prompts="cupl")
        assert (tmp_path / "prompts" / "cupl" / "fashion-mnist.json").read_bytes() == CUPL.read_bytes()
    finally:
        server.close()
    with pytest.raises(UserError, match="no CuPL description bank is published for imagefolder"):
        load_dataset(_folder(tmp_path), prompts="cupl")
