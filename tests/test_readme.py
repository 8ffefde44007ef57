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
