"""What a newcomer sees (issue 15): the bench's plan first and its main table last, one line per progress
bar in a log, "a"/"an" in our own prompts, the bad-image advice said once; round two (issue 23)."""
import argparse
import json
import os
import subprocess
import sys

import pytest

from crossgate.cli import main
from tests.conftest import make_folder, run_error


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_bench_says_its_plan_first_ends_with_the_main_table_and_a_resume_says_all_done(capsys, tmp_path):
    folder = make_folder(tmp_path / "imgs")
    argv = ["bench", "--dataset", f"imagefolder:{folder}", "--backbone", "tiny-clip", "--shots", "1,2",
            "--seeds", "1", "--methods", "zeroshot,logreg", "--jobs", "1", "--corrupt", "gaussian_noise:2",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run")]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    first, last = out.splitlines()[0], out.rstrip().splitlines()[-1]
    assert first.startswith("crossgate bench: 4 of 4 runs to do (2 methods × shots 1,2 × seeds 1, each scored on "
                            "1 corruption)")
    assert "images to encode (none cached yet)" in first and f"Results go to {tmp_path / 'run'}/" in first
    assert last.startswith("| logreg |")  # the main table is what the screen ends with
    assert "### Robustness" not in out and "robustness tables are in summary.md" in out
    # a log (stderr is not a terminal here): each bar is one line when it ends, naming what it encoded
    bars = [line for line in err.splitlines() if " img in " in line or " runs in " in line]
    assert any("(gaussian_noise, severity 2)" in line for line in bars)
    assert len([line for line in bars if line.startswith("fits:")]) == 1
    code, out, _ = run(capsys, *argv)
    assert code == 0 and out.splitlines()[0] == (f"crossgate bench: all 4 runs are already in "
                                                 f"{tmp_path / 'run' / 'results.jsonl'}; rebuilding the reports")


def test_our_own_templates_choose_a_or_an_and_given_ones_are_kept(tmp_path):
    from crossgate.datasets import load_dataset

    folder = make_folder(tmp_path / "imgs", classes=("ankle_boot", "tabby_cat"))
    texts, _ = load_dataset(f"imagefolder:{folder}").prompts()
    assert "a photo of an ankle boot." in texts and "a photo of a tabby cat." in texts
    texts, _ = load_dataset(f"imagefolder:{folder}", templates=["a photo of a {}."]).prompts()
    assert texts == ["a photo of a ankle boot.", "a photo of a tabby cat."]  # a user's template, as written
    texts, _ = load_dataset("fashion-mnist").prompts()  # issue 23: no "a ankle boot", no "a trousers"
    assert "a photo of an ankle boot." in texts and "a photo of a pair of trousers." in texts
    assert not [t for t in texts if " a ankle" in t or " a trousers" in t]


def test_the_bad_image_advice_is_said_once(capsys, tmp_path):
    from tests.conftest import run_error

    folder = make_folder(tmp_path / "imgs")
    (folder / "goldfish" / "0.png").write_bytes(b"not an image")
    err = run_error(capsys, "extract", "--dataset", f"imagefolder:{folder}", "--backbone", "tiny-clip",
                    "--cache-dir", str(tmp_path / "cache"), "--no-progress")
    assert err.count("fix or remove") == 1 and "--on-bad-image skip" in err


def test_locks_live_in_one_folder(tmp_path):
    from crossgate.cache import FeatureCache
    from crossgate.datasets import load_dataset
    from crossgate.encoders import create_encoder

    cache = FeatureCache(tmp_path / "cache", progress=False)
    cache.features(create_encoder("tiny-clip"), load_dataset(f"imagefolder:{make_folder(tmp_path / 'imgs')}"))
    assert not list((tmp_path / "cache" / "features").rglob("*.lock"))
    assert len(list((tmp_path / "cache" / "locks").glob("*.lock"))) == 3  # train, val, test


# --- round two (issue 23) ---

def test_demo_methods_list_works_and_a_typo_is_an_unknown_method(capsys, tmp_path):
    base = ["demo", "--backbone", "tiny-clip", "--shots", "1", "--seeds", "1", "--corrupt", "none",
            "--out", str(tmp_path / "d"), "--cache-dir", str(tmp_path / "c"), "--jobs", "1"]
    code, out, err = run(capsys, *base, "--methods", "logreg")
    assert code == 0, err
    assert "unknown method 'gate-jiont'" in run_error(capsys, *base, "--methods", "gate-jiont")
    assert "unknown method 'gate-jiont'" in run_error(capsys, *base, "--methods", "gate-jiont",
                                                      "--probe-iterations", "5")
    # the demo's shorter probe search still applies to the probes, and a user's flag for them still counts
    run(capsys, *base, "--methods", "linear", "--probe-iterations", "20", "--out", str(tmp_path / "e"))
    row = json.loads((tmp_path / "e" / "results.jsonl").read_text().splitlines()[0])
    assert row["params"]["config"]["iterations"] == 20 and row["params"]["config"]["eval_every"] == 5


def test_the_demo_own_defaults_apply_to_the_demo_only_and_yield_to_a_flag():
    """The demo's cheaper settings (cli.DEMO_CONFIGS) are its defaults, said in its --help beside bench's;
    bench keeps every method's own; a flag the user gives wins in both."""
    from crossgate.cli import DEMO_CONFIGS, bench_method_configs, build_parser

    def configs(*argv):
        return bench_method_configs(build_parser(argv[0]).parse_args(list(argv)))

    demo, bench = configs("demo"), configs("bench")
    assert demo["gate-joint"].k_grid == (5,) == DEMO_CONFIGS["gate-joint"]["k_grid"]
    assert bench["gate-joint"].k_grid == (1, 5, "all")
    assert demo["linear"].iterations == 640 and bench["linear"].iterations == 12_800
    assert configs("demo", "--gate-joint-k-grid", "1,all")["gate-joint"].k_grid == (1, "all")
    assert demo["gate-joint"].steps == bench["gate-joint"].steps  # only the named fields differ
    commands = next(a for a in build_parser("demo")._actions if isinstance(a, argparse._SubParsersAction))
    help_text = " ".join(commands.choices["demo"].format_help().split())  # unwrapped
    assert "(default in the demo: 5; bench: 1,5,all)" in help_text
    assert "(default in the demo: 640; bench: 12800)" in help_text
    assert "(default in the demo: 1,4,16; bench: 1,2,4,8,16)" in help_text


def test_the_demo_fits_shots_1_4_16_and_bench_every_shot_count_and_a_flag_wins():
    from crossgate.cli import build_parser

    assert build_parser("demo").parse_args(["demo"]).shots == (1, 4, 16)
    assert build_parser("bench").parse_args(["bench"]).shots == (1, 2, 4, 8, 16)
    assert build_parser("demo").parse_args(["demo", "--shots", "2,8"]).shots == (2, 8)
    assert build_parser("demo").parse_args(["demo"]).seeds == (1, 2, 3)


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["report", "--help"], ["split", "show", "--help"],
                                  ["predict", "--help"]])
def test_help_and_light_commands_import_no_torch(argv):
    done = _python(f"import sys\nfrom crossgate.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n"
                   "    pass\nheavy = [m for m in ('torch', 'torchvision', 'timm', 'open_clip') if m in sys.modules]\n"
                   "assert not heavy, heavy")
    assert done.returncode == 0, done.stderr


def test_a_broken_torchvision_is_one_line_naming_the_fix(tmp_path):
    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    done = _python(f"import sys\nfrom crossgate.cli import main\nsys.exit(main(['extract', '--cache-dir', "
                   f"{str(tmp_path / 'c')!r}]))", PYTHONPATH=str(tmp_path))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "torchvision cannot be imported" in done.stderr and "matching pair" in done.stderr
    assert "download.pytorch.org/whl/cpu" in done.stderr


def test_a_changed_setting_is_refused_before_any_work_and_mixed_seeds_are_said(capsys, tmp_path, monkeypatch):
    from crossgate import cache

    base = ["bench", "--backbone", "tiny-clip", "--methods", "zeroshot,logreg", "--shots", "1", "--corrupt", "none",
            "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), "--jobs", "1"]
    assert run(capsys, *base, "--seeds", "1,2")[0] == 0

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded before refusing")

    monkeypatch.setattr(cache.FeatureCache, "ensure_image_features", no_encoding)
    err = run_error(capsys, *base, "--seeds", "1,2", "--flip")
    assert "train_views = ['center'], not ['center', 'flip']" in err
    monkeypatch.undo()
    code, out, _ = run(capsys, *base[:4], "logreg", *base[5:], "--seeds", "4")
    assert code == 0 and "zeroshot: seeds 1,2; logreg: seeds 1,2,4" in out.splitlines()[0]
    summary = (tmp_path / "r" / "summary.md").read_text()
    assert "(2 seeds) |" in summary  # zeroshot's cell, beside logreg's three


def test_small_things_of_round_two(capsys, tmp_path):
    """split show defaults --seed to 1; train refuses to replace a model unless told; the demo's probe and tip
    flags say what they configure; help never wraps inside a number; no lock file is left behind."""
    cache = ["--cache-dir", str(tmp_path / "c")]
    code, out, err = run(capsys, "split", "show", "fashion-mnist", "--shots", "1", *cache)
    assert code == 0 and "1-shot seed 1" in err
    train = ["train", "--backbone", "tiny-clip", "--method", "logreg", "--shots", "1", "--out", str(tmp_path / "m"),
             *cache, "--no-progress"]
    assert run(capsys, *train)[0] == 0
    assert "already holds a model; pass --replace" in run_error(capsys, *train)
    assert run(capsys, *train, "--replace")[0] == 0
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    helped = capsys.readouterr().out
    assert "--tip-epochs" not in helped and "--tipf-epochs" in helped
    assert "60 values from 0.1 to 12.0" in " ".join(helped.split())
    bench = ["bench", "--backbone", "tiny-clip", "--methods", "zeroshot", "--shots", "1", "--seeds", "1",
             "--corrupt", "none", "--out", str(tmp_path / "r"), *cache, "--jobs", "1"]
    assert run(capsys, *bench)[0] == 0 and not (tmp_path / "r" / "results.jsonl.lock").exists()


def test_a_missing_checkpoint_file_is_no_such_file(capsys, tmp_path):
    err = run_error(capsys, "extract", "--backbone", f"openclip:ViT-B-32/{tmp_path / 'nothere.pt'}",
                    "--cache-dir", str(tmp_path / "c"))
    assert "no such checkpoint file" in err and "nothere.pt" in err


def test_long_phases_say_what_they_do(capsys, tmp_path):
    """train's fit and predict's encoding say so in a log (a terminal sees them tick)."""
    cache = ["--cache-dir", str(tmp_path / "c")]
    code, _, err = run(capsys, "train", "--backbone", "tiny-clip", "--method", "logreg", "--shots", "1", "--out",
                       str(tmp_path / "m"), *cache)
    assert code == 0 and "fitting logreg ..." in err and "fitting logreg: done in" in err
    folder = make_folder(tmp_path / "imgs", per_class=2)
    code, _, err = run(capsys, "predict", str(tmp_path / "m"), str(folder), "--cache-dir", str(tmp_path / "c"))
    assert code == 0 and "encoding 6 image(s): 6 img in" in err


def test_the_figure_reads_on_a_slide():
    """Issue 23: at most six methods a panel, each with its own colour, marker and line style; 1-shot points
    stay near x = 1; a panel of gate-joint minus the best other method, seed by seed."""
    import matplotlib.pyplot as plt

    from crossgate.report import accuracy_figure

    names = ["gate-joint", "a", "b", "c", "d", "e", "f", "g", "h", "zeroshot"]
    by_method = {m: {k: (50.0 + i + k, 1.0, 3) for k in (1, 2, 4, 8, 16)} for i, m in enumerate(names)}
    paired = {k: {"best_other": "h", "diffs": [0.5, -0.2, 1.0], "mean": 0.43, "std": 0.6} for k in (1, 2, 4, 8, 16)}
    fig = accuracy_figure(by_method, "t", 10.0, paired)
    first, rest, gap = fig.axes
    for ax in (first, rest):
        bars = ax.containers  # one errorbar per method: its data line first
        lines = [bar.lines[0] for bar in bars]
        styles = {(str(ln.get_color()), ln.get_marker(), ln.get_linestyle()) for ln in lines}
        assert 0 < len(lines) <= 6 and len(styles) == len(lines)
        xs = [x for ln in lines for x in ln.get_xdata() if x < 1.5]
        assert max(xs) < 1.06 and min(xs) > 0.94
    assert first.containers[0].get_label() == "gate-joint"
    assert {b.get_label() for ax in (first, rest) for b in ax.containers} == set(names) - {"zeroshot"}
    assert "minus the best other" in gap.get_title() and len(gap.collections) == 5
    plt.close(fig)


def test_the_estimate_is_this_machine_s(capsys, tmp_path):
    """Issue 23: the first plan times a batch; a later plan uses the speeds the last run measured."""
    from crossgate import timings
    from crossgate.bench import BenchConfig, fit_seconds_estimate

    cache = tmp_path / "c"
    base = ["bench", "--backbone", "tiny-clip", "--methods", "zeroshot,logreg", "--shots", "1", "--seeds", "1",
            "--corrupt", "none", "--cache-dir", str(cache), "--jobs", "1"]
    first = run(capsys, *base, "--out", str(tmp_path / "a"))[1].splitlines()[0]
    assert "from one timed batch and rough fit times" in first
    measured = timings.load(cache)
    assert measured["encode"] and {"zeroshot/1", "logreg/1"} <= set(measured["fit"])
    assert 0 <= measured["rest"] < 60  # start-up, loading and reports, outside encoding and fitting
    second = run(capsys, *base, "--out", str(tmp_path / "b"))[1].splitlines()[0]
    assert "from this machine's measured speeds" in second
    config = BenchConfig(methods=("logreg",), jobs=1)
    assert fit_seconds_estimate(config, [("logreg", 1, 1)] * 10, {"fit": {"logreg/1": 2.0}, "overhead": 1.5}) \
        == pytest.approx(30.0)
    (cache / timings.FILE).write_text("{not json")  # not crossgate's: ignored and left as it is
    assert timings.load(cache) == {}
    timings.record(cache, fit={"logreg/1": 1.0})
    assert (cache / timings.FILE).read_text() == "{not json" and timings.load(cache) == {}
    (cache / timings.FILE).unlink()
    timings.record(cache, fit={"logreg/1": 1.0})
    assert timings.load(cache)["fit"] == {"logreg/1": 1.0}


HELP_IMPORTS = ("import sys\nfrom crossgate.cli import main\ntry:\n    main([{command!r}, '--help'])\n"
                "except SystemExit:\n    pass\nprint('TORCH' if 'torch' in sys.modules else 'LIGHT', file=sys.stderr)")


def test_method_commands_help_imports_no_torch_once_the_flag_table_is_saved(tmp_path):
    """The first parser that needs the method flags imports the registry and saves their table; from then
    on bench, demo, train and explain --help import no torch and print the same help."""
    env = {"CROSSGATE_CACHE": str(tmp_path / "cache")}
    first = _python(HELP_IMPORTS.format(command="bench"), **env)
    assert first.returncode == 0 and first.stderr.strip().endswith("TORCH"), first.stderr
    assert len(list((tmp_path / "cache" / "flags").glob("*.json"))) == 1
    again = _python(HELP_IMPORTS.format(command="bench"), **env)
    assert again.stderr.strip().endswith("LIGHT"), again.stderr
    assert again.stdout == first.stdout and "--gate-joint-k-grid" in again.stdout
    for command in ("demo", "train", "explain"):
        assert _python(HELP_IMPORTS.format(command=command), **env).stderr.strip().endswith("LIGHT"), command


def test_a_flag_table_of_other_sources_or_malformed_is_not_read_nor_replaced(tmp_path, monkeypatch):
    from crossgate import flag_table

    table = {"methods": ["a"], "groups": [{"prefix": "a", "methods": ["a"], "fields": [["k", "help", "1"]]}]}
    flag_table.save(tmp_path, table)
    assert flag_table.load(tmp_path) == table
    monkeypatch.setattr(flag_table, "source_digest", lambda: "0123456789abcdef")  # an edited method file
    assert flag_table.load(tmp_path) is None
    assert flag_table.table_for(tmp_path, lambda: table) == table  # built, and saved for these sources
    assert flag_table.load(tmp_path) == table
    monkeypatch.setattr(flag_table, "source_digest", lambda: "fedcba9876543210")
    malformed = tmp_path / "flags" / "fedcba9876543210.json"
    malformed.write_text('{"methods": "not a list"}')
    assert flag_table.load(tmp_path) is None
    assert flag_table.table_for(tmp_path, lambda: table) == table  # built each time; the file is not ours
    assert malformed.read_text() == '{"methods": "not a list"}'
    (tmp_path / "flags" / "deep.json").write_text("[" * 100_000)  # hostile nesting: not read, no traceback
    monkeypatch.setattr(flag_table, "_path", lambda cache_dir: tmp_path / "flags" / "deep.json")
    assert flag_table.load(tmp_path) is None


def test_timings_that_cannot_be_written_do_not_fail_the_run(tmp_path, monkeypatch):
    """The atomic writer words a read-only or full cache as a UserError; an estimate is not worth a failed run."""
    from crossgate import storage, timings
    from crossgate.errors import UserError

    def refuse(path, data):
        raise UserError(f"cannot write {path}: read-only file system")

    monkeypatch.setattr(storage, "atomic_write_bytes", refuse)
    timings.record(tmp_path, fit={"logreg/1": 1.0})  # no exception
    assert timings.load(tmp_path) == {}


def test_timings_keep_only_numbers_crossgate_could_have_written(tmp_path):
    import json

    from crossgate import timings

    (tmp_path / timings.FILE).write_text(json.dumps({timings.machine(): {
        "fit": {"logreg/1": "fast", "tip/1": -1, "gda/1": "INF", "lpp/1": 2.0}, "encode": [1],
        "overhead": True, "rest": "soon"}}).replace('"INF"', "1e999"))  # a JSON number too large: inf
    assert timings.load(tmp_path) == {"fit": {"lpp/1": 2.0}}
