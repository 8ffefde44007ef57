"""The README says what the code does: its Python snippet runs as written, its command list is the parser's."""
import contextlib
import io
import re
import shutil
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(heading: str, language: str) -> str:
    section = README.read_text().split(f"## {heading}\n", 1)[1]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


def fast_lite_forward(self, pixels):
    """A fixed random projection of 8x8-pooled pixels, standing in for EfficientNet's forward (seconds, not
    a minute, for the 2,640 images); everything else the snippet runs is the real code."""
    import torch

    pooled = torch.nn.functional.adaptive_avg_pool2d(pixels.float(), 8).flatten(1)
    weights = torch.Generator().manual_seed(0)
    projection = torch.randn(pooled.shape[1], self.image_dim, generator=weights)
    return (pooled @ projection).numpy()


def test_the_python_snippet_runs_as_written_on_the_cache_and_draw_bench_uses(
        tmp_path, monkeypatch, session_cache, lite_small_features):
    from crossgate.encoders.lite import LiteEncoder
    from crossgate.pipeline import fit_one, load_features

    cache = tmp_path / "cache"
    shutil.copytree(session_cache / "textmaps", cache / "textmaps")  # lite's text map, fitted once per session
    monkeypatch.setenv("CROSSGATE_CACHE", str(cache))
    monkeypatch.setattr(LiteEncoder, "encode_images", fast_lite_forward)
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(readme_block("Python API", "python"), "README.md", "exec"), {})
    assert not (tmp_path / "~").exists()
    assert (cache / "features").is_dir()  # $CROSSGATE_CACHE honoured
    _, _, feats = load_features("fashion-mnist", "lite")
    _, row = fit_one(feats, "logreg", 4, 1)
    assert out.getvalue().strip() == f"test accuracy {row['acc_test'] / 100:.3f}"


def parser_commands():
    from crossgate.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices


def test_the_command_list_is_the_parsers():
    from crossgate.cli import command_summary

    assert readme_block("Command line", "").strip() == command_summary().strip(), (
        "README's command list differs from the parser; paste crossgate.cli.command_summary() into it")


@pytest.mark.parametrize("name", sorted(parser_commands()))
def test_every_command_has_a_description_and_help_on_every_argument(name):
    p = parser_commands()[name]
    assert p.description and len(p.description) > 40, f"`crossgate {name} --help` has no description"
    for action in p._actions:
        if action.dest in ("help",):
            continue
        assert action.help, f"`crossgate {name}` argument {action.option_strings or action.dest} has no help"


def _readme_command_lines() -> list[list[str]]:
    """Every concrete `crossgate ...` line of the README (inline or in a code block), as argv; lines with
    placeholders (DIR, [--flag], ...) are the command list's, checked against the parser above."""
    import re
    import shlex

    text = README.read_text()
    lines = set(re.findall(r"`(crossgate [^`]+)`", text))
    lines |= {line.split("#")[0].strip() for line in re.findall(r"^\s*(crossgate [^\n]+)$", text, re.M)}
    out = []
    for line in sorted(lines):
        try:
            argv = shlex.split(line)[1:]
        except ValueError:  # prose that merely starts with the word ("crossgate wrote (its two files...")
            continue
        if not argv or argv[0] not in ("bench", "demo", "train", "explain", "extract", "split", "predict",
                                       "datasets", "methods", "backbones", "report"):
            continue
        if any(ch in line for ch in "[]") or "..." in line or any(w.isupper() and len(w) > 1 for w in argv):
            continue
        out.append(argv)
    return out


def test_every_command_line_the_readme_shows_parses_and_passes_the_flag_checks():
    """Issue 23: a line the README shows must not fail on the flags the user typed (the demo's own defaults
    once counted as the user's); it is parsed, and for commands that fit methods the method flags are
    checked, as the command does before any work."""
    from crossgate.cli import _command_of, bench_method_configs, build_parser, method_configs_from

    lines = _readme_command_lines()
    assert len(lines) >= 6, lines
    for argv in lines:
        args = build_parser(_command_of(argv)).parse_args(argv)
        if args.command in ("bench", "demo"):
            bench_method_configs(args)
        elif args.command in ("train", "explain"):
            method_configs_from(args, [args.method])
