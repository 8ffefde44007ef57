"""Issue 22, item 3: --select-on few-shot-val | full-val | test; rows say where they chose, tables and plots
never mix protocols, test-selected numbers are marked everywhere, and the selection gap is paired by draw."""
import numpy as np

from crossgate.results import read_rows
from tests.conftest import run, run_error


def _bench(tmp_path, *extra):
    return ["bench", "--backbone", "tiny-clip", "--shots", "2", "--seeds", "1,2", "--methods", "zeroshot,tip",
            "--jobs", "1", "--no-progress", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run"),
            *extra]


def test_fit_one_chooses_on_the_images_its_protocol_names(tmp_path):
    from crossgate.pipeline import fit_one, load_features, selection_images
    from crossgate.settings import Settings

    _, _, feats = load_features("fashion-mnist", "tiny-clip", Settings(cache_dir=tmp_path, progress=False))
    split = feats.few_shot(2, 1)
    x, y = selection_images(feats, split, "full-val")
    assert len(y) == len(feats.val.labels) and np.array_equal(x, feats.val.x)
    x, y = selection_images(feats, split, "test")
    assert np.array_equal(y, feats.test.labels)
    _, row = fit_one(feats, "tip", 2, 1, select_on="full-val")
    assert row["select_on"] == "full-val" and row["n_val"] == len(feats.val.labels)
    _, row = fit_one(feats, "tip", 2, 1)
    assert row["select_on"] == "few-shot-val" and row["n_val"] == 2 * 10


def test_protocols_share_a_folder_but_never_a_table_and_test_selection_is_marked(capsys, tmp_path):
    assert run(capsys, *_bench(tmp_path))[0] == 0
    code, printed, err = run(capsys, *_bench(tmp_path, "--select-on", "test"))
    assert code == 0, err
    assert run(capsys, *_bench(tmp_path, "--select-on", "full-val"))[0] == 0
    rows = read_rows(tmp_path / "run" / "results.jsonl")
    assert len(rows) == 3 * 2 * 2 and {r["select_on"] for r in rows} == {"few-shot-val", "full-val", "test"}
    assert "CHOSEN ON THE TEST SPLIT: these numbers saw test labels" in printed
    summary = (tmp_path / "run" / "summary.md").read_text()
    # the main table holds only few-shot-val rows: its tip cell is the mean of those alone
    main = summary.split("## fashion-mnist · tiny-clip · seeds")[1].split("##")[0]
    default_tip = np.mean([r["acc_test"] for r in rows if r["method"] == "tip" and r["select_on"] == "few-shot-val"])
    assert f"| tip | {default_tip:.1f}" in main
    assert "hyperparameters CHOSEN ON THE TEST SPLIT: these numbers saw test labels" in summary
    assert "hyperparameters chosen on the whole validation split" in summary
    # the gap, paired by draw, by hand
    for protocol in ("full-val", "test"):
        pairs = [(r["acc_test"], next(d["acc_test"] for d in rows if d["select_on"] == "few-shot-val"
                                      and (d["method"], d["shots"], d["seed"]) == (r["method"], r["shots"], r["seed"])))
                 for r in rows if r["select_on"] == protocol and r["method"] == "tip" and r["shots"] == 2]
        gain = np.mean([a - b for a, b in pairs])
        gap = summary.split("### Selection gap")[1]
        line = next(ln for ln in gap.splitlines() if ln.startswith("| tip | 2 |"))
        cells = [c.strip() for c in line.split("|")[1:-1]]
        at = 3 if protocol == "full-val" else 5
        assert cells[at:at + 2] == [f"{np.mean([a for a, _ in pairs]):.1f}", f"{gain:+.1f}"]
    csv = (tmp_path / "run" / "summary.csv").read_text()
    marked = [ln for ln in csv.splitlines() if ",select:test" in ln or ",gap:test" in ln]
    assert marked and all("(saw test labels)" in ln for ln in marked)
    svg = (tmp_path / "run" / "accuracy_vs_shots__fashion-mnist__tiny-clip__select-test.svg").read_text()
    assert "saw test labels" in svg
    # each protocol resumes on its own
    assert "already in" in run(capsys, *_bench(tmp_path, "--select-on", "test"))[1]


def test_a_protocol_other_than_the_default_refuses_corruptions_in_one_line(capsys, tmp_path):
    message = run_error(capsys, *_bench(tmp_path, "--select-on", "test", "--corrupt", "blur"))
    assert "--select-on test" in message and "--corrupt none" in message
