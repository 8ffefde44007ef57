"""Adding a method is one file: a method registered here, in the test, shows in `crossgate methods`, gets
its CLI flags, runs in bench and round-trips through train / predict, with no other change."""
import json
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from crossgate.config import param
from crossgate.methods import METHODS
from crossgate.methods.base import FewShotClassifier, unit_rows
from tests.conftest import run


@dataclass
class NearestMeanConfig:
    bonus: float = param(0.0, "added to the logit of class 0", minimum=None)
    power: int = param(1, "exponent of the similarity", positive=True)


class NearestMean(FewShotClassifier):
    config_class = NearestMeanConfig

    def fit(self, x, y, *, text=None, val=None):
        x, y, val = self._check_fit(x, y, text, val)
        cfg = self._config()
        self.means_ = unit_rows(np.stack([x[y == c].mean(0) for c in range(self.n_classes_)]))
        self.bonus_ = float(cfg.bonus)
        self.chosen_ = {"bonus": self.bonus_}
        return self

    def _logits(self, x):
        logits = 10 * unit_rows(x) @ self.means_.T
        logits[:, 0] += self.bonus_
        return logits


@pytest.fixture
def toy():
    METHODS.register("toy-nearest-mean", help="Nearest class mean (a test's toy method)")(NearestMean)
    yield "toy-nearest-mean"
    METHODS.unregister("toy-nearest-mean")


def test_a_method_registered_in_one_place_reaches_every_command(toy, capsys, tmp_path):
    code, out, _ = run(capsys, "methods")
    assert code == 0 and "toy-nearest-mean" in out and "a test's toy method" in out
    with pytest.raises(SystemExit):
        run(capsys, "bench", "--help")
    out = capsys.readouterr().out
    assert "--toy-nearest-mean-bonus" in out and "--toy-nearest-mean-power" in out
    common = ["--backbone", "tiny-clip", "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    code, out, _ = run(capsys, "bench", "--methods", f"zeroshot,{toy}", "--shots", "1", "--seeds", "1",
                       "--jobs", "1", "--out", str(tmp_path / "run"), "--toy-nearest-mean-bonus", "0.25", *common)
    assert code == 0 and f"| {toy} |" in out
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    toy_row = next(r for r in rows if r["method"] == toy)
    assert toy_row["params"]["config"] == {"bonus": 0.25, "power": 1} and toy_row["hparams"] == {"bonus": 0.25}

    code, out, _ = run(capsys, "train", "--method", toy, "--shots", "2", "--out", str(tmp_path / "model"),
                       "--toy-nearest-mean-bonus", "-0.5", *common)
    assert code == 0, out
    saved = json.loads((tmp_path / "model" / "model.json").read_text())
    assert saved["method"] == toy and saved["params"]["config"]["bonus"] == -0.5
    image = tmp_path / "shoe.png"
    Image.fromarray((np.random.default_rng(0).random((28, 28)) * 255).astype(np.uint8)).save(image)
    code, out, _ = run(capsys, "predict", str(tmp_path / "model"), str(image), "--json", *common)
    assert code == 0 and json.loads(out.splitlines()[0])["image"] == str(image)

    from crossgate.model import load_model

    model = load_model(tmp_path / "model")
    assert isinstance(model.classifier, NearestMean) and model.classifier.config == NearestMeanConfig(bonus=-0.5)


def test_a_bad_value_for_a_derived_flag_is_one_line(toy, capsys):
    from tests.conftest import run_error

    assert "expected a positive integer, got '0'" in run_error(capsys, "bench", "--toy-nearest-mean-power", "0")


def test_the_estimators_import_no_cache_extraction_dataset_or_encoder_module():
    code = "import sys, crossgate.methods; print(' '.join(sorted(m for m in sys.modules if m.startswith('crossgate'))))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    forbidden = [m for m in loaded if m.split(".")[1:2] and m.split(".")[1] in
                 ("cache", "extraction", "datasets", "encoders", "storage", "corruptions", "images", "pipeline")]
    assert not forbidden, forbidden
    assert {"crossgate.features", "crossgate.fusion", "crossgate.train"} <= set(loaded)


def test_no_crossgate_module_imports_a_posix_only_module():
    """The per-entry lock is the filelock package; fcntl (absent on Windows) is imported nowhere."""
    import ast
    from pathlib import Path

    import crossgate

    for path in Path(crossgate.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) else []
            assert not {"fcntl", "termios", "pwd", "grp"} & set(names), (path, names)


def test_estimator_misuse_is_a_value_error():
    from crossgate.methods import create_method

    with pytest.raises(ValueError, match="not fitted yet"):
        create_method("gda").predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="Expected 2D array"):
        create_method("lpp").fit(np.zeros(3), np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="takes a LogRegConfig"):
        create_method("logreg", config=NearestMeanConfig()).fit(np.eye(2), np.arange(2))
