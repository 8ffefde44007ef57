"""Issue 24: how gate-joint chooses its base, the rule where validation cannot tell, and the report of it."""
import numpy as np
import pytest

from crossgate.errors import UserError
from crossgate.methods import create_method
from crossgate.methods.gate import JointConfig
from tests.conftest import blobs


def test_ties_go_to_the_ensemble_which_keeps_the_text_prior():
    """Well-separated classes: every candidate is right on every validation image, so validation cannot
    tell them apart; the base is then the ensemble (its zero-shot-anchored members keep the text prior)."""
    from crossgate.methods.gate import JointConfig

    x, y, text = blobs(spread=0.05)
    xv, yv, _ = blobs(seed=1, spread=0.05)
    for candidates in (("ensemble", "logreg"), ("logreg", "ensemble")):  # the rule, not the order given
        clf = create_method("gate-joint", config=JointConfig(candidates=candidates, steps=1),
                            random_state=0).fit(x, y, text=text, val=(xv, yv))
        accs = {c: float((clf._mixed(xv, c).argmax(1).numpy() == yv).mean()) for c in candidates}
        assert accs["ensemble"] == accs["logreg"] == 1.0
        assert clf.chosen_["base"] == "ensemble"


def test_a_candidate_better_on_validation_is_chosen_over_the_ensemble():
    from crossgate.methods.gate import JointConfig

    x, y, text = blobs(spread=0.9)
    xv, yv, _ = blobs(seed=1, spread=0.9)
    clf = create_method("gate-joint", config=JointConfig(steps=1), random_state=0).fit(x, y, text=text, val=(xv, yv))
    accs = {c: float((clf._mixed(xv, c).argmax(1).numpy() == yv).mean()) for c in ("ensemble", "logreg")}
    best = max(accs.values())
    assert accs[clf.chosen_["base"]] == best
    assert clf.chosen_["base"] == ("ensemble" if accs["ensemble"] == best else "logreg")


def test_summary_counts_the_bases_chosen_per_shot_count():
    from crossgate.report import base_choices, summary_markdown

    def row(shots, seed, base):
        return {"dataset": "d", "backbone": "b", "method": "gate-joint", "shots": shots, "seed": seed,
                "acc_test": 50.0, "hparams": {"base": base}}

    rows = [row(1, 1, "ensemble"), row(1, 2, "logreg"), row(1, 3, "ensemble"), row(4, 1, "logreg"),
            {**row(4, 1, "tip"), "corruption": "fog", "severity": 3}]  # a corrupted row is the same fit
    assert base_choices(rows) == {("d", "b"): {1: {"ensemble": 2, "logreg": 1}, 4: {"logreg": 1}}}
    text = summary_markdown(rows)
    assert "## gate-joint's base" in text and "| 1 | 2 | 1 |" in text and "| 4 | 0 | 1 |" in text


def test_lpp_can_keep_its_last_epoch():
    from crossgate.methods.lpp import LPPConfig

    x, y, text = blobs()
    xv, yv, _ = blobs(seed=1)
    last = create_method("lpp", config=LPPConfig(epochs=30, select_epoch=False)).fit(x, y, text=text, val=(xv, yv))
    assert last.chosen_["epoch"] == 30
    chosen = create_method("lpp", config=LPPConfig(epochs=30)).fit(x, y, text=text, val=(xv, yv))
    assert 1 <= chosen.chosen_["epoch"] <= 30
    assert np.all(np.isfinite(last.coef_))


def test_taskres_keeps_its_default_alpha_on_one_validation_image_per_class():
    from crossgate.methods.taskres import TaskResConfig

    x, y, text = blobs(per_class=2)
    one = np.concatenate([np.flatnonzero(y == c)[:1] for c in range(4)])
    cfg = TaskResConfig(alphas=(1.0, 0.5), epochs=3)
    assert create_method("taskres", config=cfg).fit(x, y, text=text, val=(x[one], y[one])).alpha_ == 1.0
    chosen = create_method("taskres", config=cfg).fit(x, y, text=text, val=(x, y))  # two per class: a choice
    assert chosen.chosen_["alpha"] in (1.0, 0.5)
    forced = create_method("taskres", config=TaskResConfig(alphas=(1.0, 0.5), epochs=3, select_from=1))
    assert forced.fit(x, y, text=text, val=(x[one], y[one])).alpha_ in (1.0, 0.5)


@pytest.mark.parametrize("scales", [None, {"logreg": 1.0}, "wrong", {"bad": -1.0}, {"zero": 0.0}, {"flag": True}])
def test_a_saved_gate_joint_with_missing_or_bad_base_scales_is_refused_in_one_line(tmp_path, scales):
    import json

    from crossgate.model import SavedModel, load_model, save_model

    x, y, text = blobs()
    clf = create_method("gate-joint", config=JointConfig(steps=1), random_state=0).fit(x, y, text=text)
    save_model(tmp_path / "m", SavedModel(clf, "gate-joint", "tiny-clip", "id-1", list("abcd"), ["{}"]))
    path = tmp_path / "m" / "model.json"
    meta = json.loads(path.read_text())
    values = meta["state"]["values"]
    if scales is None:
        del values["member_scales_"]
    elif isinstance(scales, dict) and len(scales) == 1 and "logreg" not in scales:
        values["member_scales_"]["lpp"] = next(iter(scales.values()))  # one base's scale negative or NaN
    else:
        values["member_scales_"] = scales
    path.write_text(json.dumps(meta))
    with pytest.raises(UserError, match="scale for each base"):
        load_model(tmp_path / "m")
