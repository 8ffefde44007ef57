"""The command line: the only module that reads argv and the environment. Thin over the library."""
from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import sys
import time
from pathlib import Path

from . import __version__
from .errors import UserError


class _HelpFormatter(argparse.HelpFormatter):
    """Help lines wrapped between words only: a number or a flag is never cut in two."""

    def _split_lines(self, text, width):
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_long_words=False, break_on_hyphens=False)


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad input in one line (no usage dump) and exits with status 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def corruption_specs(text: str):
    from .corruptions import parse_specs
    from .errors import UserError

    if text.strip() == "none":
        return ()
    try:
        return parse_specs(text)
    except UserError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else positive_int(text)


def _list_of(text: str, parse, what: str) -> tuple:
    """'1,4,16' -> (parse('1'), parse('4'), parse('16')): at least one item, no duplicates."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, got nothing")
    return _unique(tuple(parse(t) for t in items), text)


def int_list(text: str) -> tuple[int, ...]:
    """'1,4,16' -> (1, 4, 16); every item a positive integer, no duplicates."""
    return _list_of(text, positive_int, "positive integers")


MAX_SEED = 2 ** 63 - 1  # what torch's and numpy's generators take


def seed_value(text: str) -> int:
    value = positive_int(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed must be at most 2**63 - 1, got {text}")
    return value


def seed_list(text: str) -> tuple[int, ...]:
    """'1,2,3' -> (1, 2, 3): seeds, each within what the generators take, no duplicates."""
    return _list_of(text, seed_value, "seeds")


def _unique(values: tuple, text: str) -> tuple:
    """A list flag's values; a repeated one would be run twice and counted as two seeds: refused."""
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"{', '.join(repeated)} given twice in {text!r}; list each once")
    return values


def name_list(text: str) -> tuple[str, ...]:
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    if not items:
        raise argparse.ArgumentTypeError("expected 'all' or a comma-separated list of method names")
    return () if items == ("all",) else _unique(items, text)


def registered(tag: str) -> list[str]:
    """The datasets registered with `tag` ("coop": the suite; "shift": test-only shift sets)."""
    from .datasets import DATASETS

    return DATASETS.names(tag=tag)


def shift_list(text: str) -> tuple[str, ...]:
    """'all' or shift-set names, each once."""
    available = registered("shift")
    if text.strip() == "all":
        return tuple(available)
    names = _list_of(text, str, "shift sets")
    unknown = [n for n in names if n not in available]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown shift set {unknown[0]!r}; available: {', '.join(available)}, all")
    return names


SUITES = {"coop": "the 11 CoOp datasets"}  # a --dataset value naming every dataset registered with that tag


def dataset_names(text: str) -> list[str]:
    """--dataset: one name, a suite (`coop`) or a comma-separated list; imagefolder paths made canonical (a
    path holding a comma is one name when it exists)."""
    from .datasets.imagefolder import canonical_name

    def one(name: str) -> str:
        name = name.strip()
        return canonical_name(name) if name.startswith("imagefolder:") and name[len("imagefolder:"):].strip() else name

    if text.strip() in SUITES:
        return registered(text.strip())
    if "," not in text or (text.startswith("imagefolder:") and Path(text[len("imagefolder:"):]).expanduser().exists()):
        return [one(text)]
    names = [one(n) for n in text.split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise UserError(f"--dataset {text!r}: expected a dataset name, 'coop', or a comma-separated list of "
                        "different names (see `crossgate datasets`)")
    return [n for part in names for n in (registered(part) if part in SUITES else [part])]


def shots_value(text: str) -> int | str:
    return "all" if text == "all" else positive_int(text)


def method_flag_groups() -> dict[str, tuple[type, list[str]]]:
    """flag prefix -> (config class, the methods it configures): every registered method's config fields
    become flags --<prefix>-<field>; methods sharing a config class with a flag_prefix share its flags."""
    from .config import flag_prefix
    from .methods import METHODS

    groups: dict[str, tuple[type, list[str]]] = {}
    for name in METHODS.names():
        cls = METHODS.factory(name).config_class
        if cls is None:
            continue
        prefix = flag_prefix(cls, name)
        if prefix in groups and groups[prefix][0] is not cls:
            raise ValueError(f"flag prefix {prefix!r} is claimed by {groups[prefix][0].__name__} and {cls.__name__}")
        groups.setdefault(prefix, (cls, []))[1].append(name)
    return groups


def _field_type(prefix: str, name: str):
    """The flag's parser; the config class (and with it torch) is looked up only when the flag is given."""
    from .config import parse_field

    def parse(text: str):
        try:
            return parse_field(method_flag_groups()[prefix][0], name, text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = name  # argparse names the type in its error message
    return parse


def _flag_table_from_registry() -> dict:
    from .config import config_fields, default_text
    from .methods import METHODS

    return {"methods": METHODS.names(),
            "groups": [{"prefix": prefix, "methods": methods,
                        "fields": [[f.name, f.metadata.get("help", ""), default_text(f)] for f in config_fields(cls)]}
                       for prefix, (cls, methods) in method_flag_groups().items()]}


def method_flag_table() -> dict:
    """The method names and flags the parsers show: from the registry where it is imported already, else
    from the table saved the first time (flag_table.py), so that --help imports no torch."""
    from . import flag_table
    from .settings import default_cache_dir

    if "crossgate.methods" in sys.modules:
        return _flag_table_from_registry()
    return flag_table.table_for(default_cache_dir(), _flag_table_from_registry)


def add_method_flags(p: argparse.ArgumentParser) -> None:
    for group_spec in method_flag_table()["groups"]:
        prefix = group_spec["prefix"]
        group = p.add_argument_group(f"{', '.join(group_spec['methods'])} (--{prefix}-*)")
        for name, help_text, default in group_spec["fields"]:
            group.add_argument(f"--{prefix}-{name.replace('_', '-')}", dest=f"config:{prefix}:{name}",
                               type=_field_type(prefix, name), default=None, metavar=name.upper(),
                               help=f"{help_text} (default: {default})")


def method_configs_from(args, methods=None, command_defaults: dict | None = None) -> dict:
    """method name -> its config: the defaults, with the flags given on the command line. A flag given for
    a method that is not run (`--gate-d-proj` with `--method gate-joint`) is refused, not ignored; an
    unknown method name is refused first. `command_defaults`: {flag prefix: {field: value}}, a command's own
    defaults (the demo's shorter probe search), which are not flags the user gave."""
    from .config import config_fields
    from .methods import METHODS

    unknown = [m for m in methods or () if m not in METHODS]
    if unknown:
        raise UserError(f"unknown method {unknown[0]!r}; available: {', '.join(METHODS.names())}")
    configs, groups = {}, method_flag_groups()
    for prefix, (cls, owners) in groups.items():
        given = {f.name: getattr(args, f"config:{prefix}:{f.name}", None) for f in config_fields(cls)}
        given = {k: v for k, v in given.items() if v is not None}
        if given and methods is not None and not set(owners) & set(methods):
            flag = f"--{prefix}-{next(iter(given)).replace('_', '-')}"
            others = {m: flag_prefix for flag_prefix, (_, ms) in groups.items() for m in ms}
            hint = "; ".join(f"--{others[m]}-* for {m}" for m in methods if m in others)
            raise UserError(f"{flag} configures {', '.join(owners)}, which this run does not fit"
                            + (f" (its flags: {hint})" if hint else "") + "; drop it or run that method")
        # one object for the methods sharing a config (linear, crossmodal); the user's flags over the command's
        config = cls(**{**(command_defaults or {}).get(prefix, {}), **given})
        configs.update({m: config for m in owners})
    return configs


def bench_method_configs(args) -> dict:
    """bench's and demo's method configs: the flags given, over the demo's own defaults in the demo."""
    from .methods import METHODS

    return method_configs_from(args, args.methods or METHODS.names(),
                               DEMO_CONFIGS if args.command == "demo" else None)


def add_template_flag(p: argparse.ArgumentParser, flip_help: str = "also train on horizontally mirrored copies "
                      "of the training images (Lin et al.'s flip view)") -> None:
    p.add_argument("--flip", action="store_true", help=flip_help)
    p.add_argument("--template", action="append", dest="templates", metavar="TEXT", type=template_text,
                   help="imagefolder datasets: a prompt template with one {} for the class name; repeat for "
                        "several (default: a set of 7 photo templates)")
    p.add_argument("--prompts", default="templates", metavar="templates|cupl|FILE.json",
                   help="the class texts: the dataset's templates (default), cupl (the CuPL descriptions published "
                        "for a CoOp dataset, downloaded and checked on first use) or a JSON file {class name: "
                        "[sentence, ...]}; zero-shot is then the mean of a class's descriptions and the gate "
                        "selects among all of them")


def template_text(text: str) -> str:
    from .datasets.base import check_template
    from .errors import UserError

    try:
        return check_template(text)
    except UserError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# which of the shared flags each command reads (a flag that does nothing is not offered)
DATA_FLAGS = ("cache-dir", "data-root", "device", "batch-size", "workers", "decode", "no-progress", "offline",
              "on-bad-image")
COMMAND_FLAGS = {"extract": DATA_FLAGS, "bench": DATA_FLAGS, "demo": DATA_FLAGS, "train": DATA_FLAGS,
                 "explain": DATA_FLAGS, "predict": tuple(f for f in DATA_FLAGS if f != "data-root"),
                 "split": ("cache-dir", "data-root", "offline"), "show": ("cache-dir", "data-root", "offline")}


DEVICE_HELP = {"predict": "where the encoder runs and the model predicts (default: auto, a CUDA GPU when there is "
                          "one)",
               "extract": "where the encoder runs (default: auto, a CUDA GPU when there is one)"}


def _common(flags=(), suppress: bool = False, command: str = "") -> argparse.ArgumentParser:
    """The shared flags `flags` (and --debug) as a parent parser. `suppress`: no defaults, for a nested
    subcommand, whose defaults would otherwise overwrite what its parent command parsed."""
    common = argparse.ArgumentParser(add_help=False)

    def add(name, **kwargs):
        if name in flags or name == "debug":
            if suppress:
                kwargs["default"] = argparse.SUPPRESS
            common.add_argument(f"--{name}", **kwargs)

    add("cache-dir", type=Path, default=None, help="feature cache (default: $CROSSGATE_CACHE or ~/.cache/crossgate)")
    add("data-root", type=Path, default=None, help="datasets on disk (default: $CROSSGATE_DATA or CACHE_DIR/data)")
    add("device", choices=("auto", "cpu", "cuda"), default="auto",
        help=DEVICE_HELP.get(command, "where encoders run and methods fit (default: auto, a CUDA GPU when there "
                                      "is one)"))
    add("batch-size", type=positive_int, default=64, help="images per encoder batch (default: 64)")
    add("workers", type=non_negative_int, default=None,
        help="processes reading and decoding images (default: 8 on a GPU; on a CPU 0, i.e. in the main "
             "process, up to 4 cores, else a quarter of the cores, at most 4)")
    add("decode", choices=("auto", "pil", "torch"), default="auto",
        help="how images become pixels: pil (decode and resize on the CPU), torch (JPEGs decoded and resized "
             "on the encoder's device; nvjpeg on a GPU); default auto: torch on a GPU, pil on a CPU")
    add("no-progress", action="store_true", help="hide progress bars")
    add("offline", action="store_true",
        help="never download datasets or weights (also CROSSGATE_OFFLINE=1); name the missing files instead")
    add("on-bad-image", choices=("fail", "skip"), default="fail",
        help="unreadable images: fail listing every one (default), or skip them and say how many")
    add("debug", action="store_true", help="show the traceback of an error")
    return common


def command_summary(parser: argparse.ArgumentParser | None = None) -> str:
    """The README's command list, from the parser: each command's arguments (the shared and the per-method
    flags named, not listed) and its one-line help."""
    parser = parser or build_parser()
    shared = {f"--{f}" for f in DATA_FLAGS} | {"--debug", "-h", "--help"}
    lines = []
    for name, p in _subcommands(parser).items():
        words = [f"crossgate {name}"]
        nested = _subcommands(p)
        targets = [(f"{name} {n}", q) for n, q in nested.items()] if nested else [(name, p)]
        for label, q in targets:
            words = [f"crossgate {label}"]
            for action in q._actions:
                if action.dest.startswith("config:") or set(action.option_strings) & shared or \
                        isinstance(action, argparse._SubParsersAction):
                    continue
                name_of_value = action.metavar or ("|".join(action.choices) if action.choices else action.dest.upper())
                if not action.option_strings:
                    words.append(name_of_value + ("..." if action.nargs == "+" else ""))
                    continue
                flag = action.option_strings[0]
                value = "" if action.nargs == 0 else f" {name_of_value}"
                words.append(f"{flag}{value}" if action.required else f"[{flag}{value}]")
            if any(a.dest.startswith("config:") for a in q._actions):
                words.append("[--<method>-<field> ...]")
            lines.append(f"{' '.join(words)}\n    {_HELP[name]}")
    return "\n".join(lines)


def _subcommands(parser: argparse.ArgumentParser) -> dict:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


# What makes `crossgate demo` cheaper than bench on two cores (README, "What the demo runs", with each one's
# measured cost): Lin et al.'s grid with a twentieth of the updates, validated every 5 (their 128
# validations); gate-joint's k fixed at 5 (validation's most frequent choice); shots 1, 4 and 16 (each cell
# the same as bench's, 2 and 8 left out); corrupted copies of a class-balanced test subset. `bench` keeps
# the full protocol.
DEMO_PROBE = {"iterations": 640, "eval_every": 5}
DEMO_CONFIGS = {"probe": DEMO_PROBE, "gate-joint": {"k_grid": (5,)}}  # {flag prefix: {field: demo default}}
DEMO_SHOTS = (1, 4, 16)
DEMO_CORRUPT_PER_CLASS = 50


def _listed(values: tuple) -> str:
    return ",".join(map(str, values))


_HELP = {
    "backbones": "list the image/text backbones",
    "datasets": "list the datasets",
    "methods": "list the few-shot methods",
    "extract": "fill the feature cache, fit nothing",
    "bench": "few-shot benchmark: methods x shots x seeds, resumable, with reports",
    "demo": "the default benchmark, sized for minutes on a laptop",
    "train": "fit one method and save it as a model folder",
    "predict": "classify image files with a saved model",
    "explain": "which texts the gate selected, per image",
    "split": "the images of a split or of a few-shot draw, one per line",
    "report": "rebuild summary.md / summary.csv / plots from DIR/results.jsonl",
}

_DESCRIPTION = {
    "backbones": "List the registered backbones (image and text towers). Any open_clip model is also a "
                 "backbone as openclip:<arch>/<pretrained>; --all lists every architecture/pretrained tag.",
    "datasets": "List the registered datasets. Your own images are a dataset too: imagefolder:PATH, one "
                "sub-folder per class.",
    "methods": "List the few-shot methods with the paper each one comes from. Every method takes "
               "--<method>-<field> flags in bench, demo, train and explain (see `crossgate bench --help`).",
    "extract": "Encode every split of a dataset with a backbone into the feature cache (resumable, in "
               "chunks) and encode its class prompts; fit nothing. Under torchrun, the ranks share the work.",
    "bench": "Fit every method on every (shots, seed) few-shot draw of a dataset's cached features, choosing "
             "hyperparameters on the few-shot validation split only, and write results.jsonl (one line per "
             "run), summary.md, summary.csv and a plot into --out. Runs already in --out are skipped.",
    "demo": "The default benchmark, sized for minutes on two CPU cores: the lite backbone on the embedded "
            "Fashion-MNIST subset, every method, shots 1, 4 and 16 (bench: 1, 2, 4, 8, 16), seeds 1-3, and "
            "every corruption at severity 3 on 50 test images per class. Lin et al.'s probe search runs with "
            "640 updates per setting (bench: 12,800) and gate-joint tries k = 5 only (bench: 1, 5, all); "
            "everything else as in bench. It says what it will do before it starts.",
    "train": "Fit one method on one few-shot draw (or on every training image, --shots all), print its "
             "train / val / test accuracy and save it as a model folder (safetensors + JSON) for predict.",
    "predict": "Classify image files (or the images in folders) with a model folder written by train: the "
               "top classes with probabilities, and for gate methods the texts the gate selected.",
    "explain": "Fit a gate method on a few-shot draw and print, for some images of a split, the texts the "
               "gate selected with their weights, the true and the predicted class, and each image's file.",
    "split": "Show the images of a dataset split, or of the few-shot draw bench makes from it: file paths "
             "relative to the images folder (indices for a dataset embedded in memory), one per line.",
    "report": "Rebuild summary.md, summary.csv and the plots of a results folder from its results.jsonl "
              "alone, and print the tables.",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with `only`, a command name or "" (none), the arguments of that command alone: the
    others are listed but not built, so that `crossgate --help` and light commands import no torch."""
    from .settings import DEFAULT_SEEDS, DEFAULT_SHOTS

    def wanted(name: str) -> bool:
        return only is None or name == only

    parser = _Parser(prog="crossgate", description="Few-shot image classification on frozen vision-language "
                     "encoders, with dynamic gating fusion.",
                     epilog="Run `crossgate demo` for the default few-shot benchmark; `crossgate COMMAND --help` "
                            "for a command's flags.")
    parser.add_argument("--version", action="version", version=f"crossgate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name, **kwargs):
        return sub.add_parser(name, parents=[_common(COMMAND_FLAGS.get(name, ()), command=name)], help=_HELP[name],
                              description=_DESCRIPTION[name], **kwargs)

    def dataset_flags(p):
        p.add_argument("--dataset", default="fashion-mnist",
                       help="a name of `crossgate datasets`, or imagefolder:PATH; bench and demo also take a "
                            "comma-separated list or coop (the 11 CoOp datasets) into one folder (default: "
                            "fashion-mnist)")
        p.add_argument("--backbone", default="lite",
                       help="a name of `crossgate backbones`, or openclip:ARCH/PRETRAINED (default: lite)")

    p = command("backbones")
    p.add_argument("--all", action="store_true", help="also list every open_clip architecture/pretrained tag")
    command("datasets")
    command("methods")

    p = command("extract")
    dataset_flags(p)
    add_template_flag(p, flip_help="also extract the horizontally mirrored training images (Lin et al.'s flip "
                                   "view), cached as their own entry")

    def method_names() -> str:
        return ", ".join(method_flag_table()["methods"])

    def add_bench_args(p, out_default, corrupt_default="", corrupt_per_class=None, shots=DEFAULT_SHOTS):
        from .corruptions import ALL as CORRUPTIONS

        dataset_flags(p)
        in_bench = "" if shots == DEFAULT_SHOTS else f" in the demo: {_listed(shots)}; bench"
        p.add_argument("--shots", type=int_list, default=shots, metavar="LIST",
                       help=f"training images per class, e.g. 1,4,16 (default{in_bench}: {_listed(DEFAULT_SHOTS)})")
        p.add_argument("--seeds", type=seed_list, default=DEFAULT_SEEDS, metavar="LIST",
                       help="few-shot draws, e.g. 1,2,3 (default: 1,2,3)")
        p.add_argument("--methods", type=name_list, default=(), metavar="LIST",
                       help=f"'all' (default) or a comma-separated list of: {method_names()}")
        p.add_argument("--out", type=Path, default=Path(out_default), metavar="DIR",
                       help=f"output directory (default: {out_default}); finished runs in it are skipped")
        p.add_argument("--jobs", type=positive_int, default=min(os.cpu_count() or 1, 4), metavar="N",
                       help="worker processes fitting (shots, seed) draws in parallel (default: cores, at most 4; "
                            "the rows are the same for any N)")
        p.add_argument("--corrupt", type=corruption_specs, metavar="SPEC[,SPEC...]",
                       default=corruption_specs(corrupt_default) if corrupt_default else (),
                       help="also score the fitted heads on corrupted test data: NAME[:S or S1-S2] with severity "
                            f"1-5 (default 3), NAME one of {', '.join(CORRUPTIONS)} or all; 'none' for none "
                            f"(default: {corrupt_default or 'none'})")
        p.add_argument("--shift", type=shift_list, default=(), metavar="LIST",
                       help="also score every fitted model on these shift sets of the dataset, without refitting: "
                            "'all' or a comma-separated list of imagenet_v2, imagenet_sketch, imagenet_a, imagenet_r "
                            "(with --dataset imagenet; default: none)")
        p.add_argument("--select-on", choices=("few-shot-val", "full-val", "test"), default="few-shot-val",
                       help="where methods choose hyperparameters and checkpoints: few-shot-val (crossgate's "
                            "protocol, the default), full-val (the whole validation split, as GDA and ProKeR do) "
                            "or test (the test split, as some papers did: every number then saw test labels, and "
                            "every table and plot says so). Rows of different protocols share a folder; summary.md "
                            "compares them draw by draw (the selection gap)")
        p.add_argument("--protocol", choices=("few-shot", "base2new"), default="few-shot",
                       help="few-shot (default), or base2new (CoCoOp's): the first half of the classes, in label "
                            "order, are base; methods fit on their images and are scored on base and on new test "
                            "images, naming the new classes from text (zeroshot, gda; the others are not "
                            "applicable and left out); tables give base, new and their harmonic mean")
        p.add_argument("--aug-views", type=non_negative_int, default=0, metavar="N",
                       help="also encode N augmented passes of each draw's training images (random resized crop, "
                            "scale 0.5-1, and flip: CoOp's and Tip-Adapter's training transform, the same per "
                            "image every run) and give them to the methods whose official code uses them (gda, "
                            "proker, tip, tipf; `crossgate methods` says how); GDA and ProKeR's papers use 10 "
                            "(default: 0)")
        p.add_argument("--corrupt-seed", type=non_negative_int, default=0, metavar="N",
                       help="seed of the corruptions (default: 0; the same corrupted data for every run)")
        p.add_argument("--corrupt-per-class", type=positive_int, default=corrupt_per_class, metavar="N",
                       help="corrupt only the first N test images of each class; the robustness rows compare "
                            "on those images (default: " + (f"{corrupt_per_class})" if corrupt_per_class
                                                            else "every test image)"))
        add_template_flag(p)
        add_method_flags(p)

    bench = command("bench")
    if wanted("bench"):
        add_bench_args(bench, "crossgate-runs/bench")
    demo = command("demo")
    if wanted("demo"):
        add_bench_args(demo, "crossgate-demo", corrupt_default="all:3", corrupt_per_class=DEMO_CORRUPT_PER_CLASS,
                       shots=DEMO_SHOTS)
    for action in demo._actions:  # the demo's own defaults, said in its --help
        _, prefix, field = (action.dest.split(":") + ["", ""])[:3]
        if action.dest.startswith("config:") and field in DEMO_CONFIGS.get(prefix, {}):
            value = _listed(v) if isinstance(v := DEMO_CONFIGS[prefix][field], tuple) else v
            action.help = re.sub(r"\(default: ([^)]*)\)$", rf"(default in the demo: {value}; bench: \1)",
                                 action.help)

    p = command("train")
    if wanted("train"):
        add_train_args(p, dataset_flags, method_names())
    _add_predict_args(command("predict"))
    p = command("explain")
    if wanted("explain"):
        add_explain_args(p, dataset_flags)
    _add_split_args(command("split"))
    p = command("report")
    p.add_argument("dir", type=Path, metavar="DIR", help="a results folder written by bench or demo")
    return parser


def add_train_args(p, dataset_flags, method_names: str) -> None:
    dataset_flags(p)
    p.add_argument("--method", default="gate-joint", help=f"one of: {method_names} (default: gate-joint)")
    p.add_argument("--shots", type=shots_value, default="all", metavar="K",
                   help="training images per class, or 'all' for every train image (default: all)")
    p.add_argument("--seed", type=seed_value, default=1, metavar="S", help="few-shot draw and method seed (default: 1)")
    p.add_argument("--out", type=Path, required=True, metavar="MODEL",
                   help="model folder to write (model.safetensors + model.json)")
    p.add_argument("--replace", action="store_true", help="replace the model already in --out (default: refused)")
    add_template_flag(p)
    add_method_flags(p)


def _add_predict_args(p) -> None:
    p.add_argument("model", type=Path, metavar="MODEL", help="a folder written by `crossgate train`")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE_OR_FOLDER",
                   help="image files, or folders searched for images (each file is classified once)")
    p.add_argument("--backbone", default=None,
                   help="encoder to use (default: the model's); refused if its identity differs from the model's")
    p.add_argument("--top", type=positive_int, default=3, metavar="N", help="classes to show per image (default: 3)")
    p.add_argument("--texts", type=positive_int, default=3, metavar="N",
                   help="gate methods: selected texts to show per image (default: 3)")
    p.add_argument("--json", action="store_true", help="one JSON object per image instead of text")


def add_explain_args(p, dataset_flags) -> None:
    dataset_flags(p)
    p.add_argument("--method", default="gate-joint", help="gate or gate-joint (default: gate-joint)")
    p.add_argument("--shots", type=positive_int, default=4, metavar="K",
                   help="training images per class of the draw (default: 4)")
    p.add_argument("--seed", type=seed_value, default=1, metavar="S", help="few-shot draw and method seed (default: 1)")
    p.add_argument("--split", choices=("train", "val", "test"), default="test",
                   help="the split the images come from (default: test)")
    p.add_argument("--images", type=index_list, default=None, metavar="LIST",
                   help="0-based positions in the split, as `crossgate split show DATASET --split test` lists "
                        "them (default: the first image of each class)")
    add_template_flag(p)
    add_method_flags(p)


def _add_split_args(p) -> None:
    split_sub = p.add_subparsers(dest="split_command", metavar="ACTION", parser_class=_Parser,
                                 help="show: print a split's images")
    split_sub.required = True
    q = split_sub.add_parser("show", parents=[_common(COMMAND_FLAGS["show"], suppress=True)],
                             help="print a split's images, one per line", description=_DESCRIPTION["split"])
    q.add_argument("dataset", metavar="DATASET", help="a name of `crossgate datasets`, or imagefolder:PATH")
    q.add_argument("--split", choices=("train", "val", "test"), default="train",
                   help="train or val: the few-shot draw from that split (needs --shots; --seed 1 unless given); test: "
                        "every test image (default: train)")
    q.add_argument("--shots", type=positive_int, default=None, metavar="K",
                   help="training images per class of the draw")
    q.add_argument("--seed", type=seed_value, default=None, metavar="S",
                   help="the draw's seed (default: 1, as train and explain)")


def index_list(text: str) -> tuple[int, ...]:
    """'0,4,17' -> (0, 4, 17): positions in a split, no duplicates."""
    return _list_of(text, non_negative_int, "0-based positions")


def build_settings(args):
    """Settings from the flags a command has (a command without a flag gets its default)."""
    from .settings import Settings, default_cache_dir, default_data_root

    flag = vars(args).get
    return Settings(cache_dir=(flag("cache_dir") or default_cache_dir()).expanduser(),
                    data_root=(flag("data_root") or default_data_root()).expanduser(), device=flag("device", "auto"),
                    batch_size=flag("batch_size", 64), workers=flag("workers"), decode=flag("decode", "auto"),
                    progress=not flag("no_progress", False), on_bad_image=flag("on_bad_image", "fail"),
                    **({"offline": True} if flag("offline") else {}))


def _load(args, settings, built: tuple = (None, None)):
    """The encoder, the dataset and their (cached) features, with the corrupted test data --corrupt asks for;
    `built`: the (dataset, encoder) already made for these flags, if any."""
    from .pipeline import load_features

    return load_features(args.dataset, args.backbone, settings, templates=getattr(args, "templates", None),
                         prompts=getattr(args, "prompts", None), flip=getattr(args, "flip", False),
                         corrupt=getattr(args, "corrupt", ()),
                         shift=getattr(args, "shift", ()),
                         corrupt_seed=getattr(args, "corrupt_seed", 0),
                         corrupt_per_class=getattr(args, "corrupt_per_class", None), dataset=built[0],
                         encoder=built[1])


def cmd_list(args, settings) -> int:
    if args.command == "backbones":
        from .encoders import BACKBONES
        from .encoders.openclip import list_pretrained

        for name in BACKBONES.names():
            print(f"{name:<34} {BACKBONES.help(name)}")
        print(f"{'openclip:<arch>/<pretrained>':<34} any open_clip model, e.g. openclip:ViT-B-16/openai; "
              "the pretrained part may be a local checkpoint path")
        if args.all:
            print("\n".join(list_pretrained()))
    else:
        registry = {"datasets": "DATASETS", "methods": "METHODS"}[args.command]
        module = __import__(f"crossgate.{args.command}", fromlist=[registry])
        reg = getattr(module, registry)
        if args.command == "datasets":
            from .datasets.download import availability

            print(f"{'NAME':<20} {'FIRST USE':<16} ABOUT")
            for name in reg.names():
                print(f"{name:<20} {availability(name):<16} {reg.help(name)}")
            print(f"{'imagefolder:PATH':<20} {'local':<16} your images, one sub-folder per class (optional train/ "
                  "val/ test/)")
            print("\nFIRST USE: downloads = images and split files are fetched and checked (checksums; where none is "
                  "published, by extracting and reading them); split downloads / index downloads = only those "
                  "files, you supply the images (the error says where they go); local = nothing is fetched. "
                  "--offline fetches nothing.")
        else:
            for name in reg.names():
                print(f"{name:<20} {reg.help(name)}")
                use = reg.factory(name).aug_views or "not used (the centre view; --flip adds Lin et al.'s mirrored one)"
                print(f"{'':<20}   --aug-views: {use}")
    return 0


def cmd_extract(args, settings) -> int:
    """Fill the cache without loading the features back (memory stays flat); under torchrun the ranks
    share the chunks of every split and rank 0 writes the entries."""
    from . import distributed
    from .datasets import SPLITS, load_dataset
    from .encoders import create_encoder
    from .pipeline import feature_cache

    start = time.perf_counter()
    group = distributed.start(settings.torch_device())
    try:
        dataset = load_dataset(args.dataset, settings, templates=args.templates,
                               prompts=getattr(args, "prompts", None))
        encoder = create_encoder(args.backbone, cache_dir=settings.cache_dir,
                                 device=group.device(settings.torch_device()), decode=settings.decode)
        cache = feature_cache(settings)
        cache.ensure_features(encoder, dataset, args.flip, group.rank, group.world, group.barrier)
        if group.rank == 0:
            texts = cache.text_features(encoder, dataset)
            sizes = ", ".join(f"{s} {len(dataset.split(s))}" for s in SPLITS)
            print(f"features of {dataset.name} with {args.backbone} in {settings.cache_dir} ({sizes} images; "
                  f"{len(texts.texts)} prompts; {group.world} process(es); {time.perf_counter() - start:.1f} s)")
    finally:
        distributed.stop(group)
    return 0


def cmd_bench(args, settings) -> int:
    from .bench import check_out_folder
    from .report import (
        average_markdown,
        base_to_new_markdown,
        markdown_table,
        other_protocols,
        paired_markdown,
        selection_gap_markdown,
        summarize,
        write_reports,
    )
    from .results import SELECT_LABELS

    started, rows, work = time.perf_counter(), [], []
    if len(args.datasets) > 1:
        available = _suite_preflight(args, settings)
        check_out_folder(args.out)
        runs = [argparse.Namespace(**{**vars(args), "dataset": name,  # each shift set with the dataset it shifts
                                      "shift": tuple(s for s in args.shift if s in registered(f"shift-of:{name}"))})
                for name in available]
    else:
        runs = [args]
    for run in runs:
        run_rows, seconds = _bench_one(run, settings)
        rows += run_rows
        work += [seconds] if seconds is not None else []
    written = write_reports(args.out)
    if work:  # what the run spent outside encoding and fitting (start-up, loading, reports), for the next plan
        from . import timings

        timings.record(settings.cache_dir, rest=max(0.0, time.perf_counter() - started - sum(work)))
    print(f"wrote {args.out / 'results.jsonl'}, " + ", ".join(p.name for p in written)
          + (f"; the {len(args.corrupt)} robustness tables are in summary.md" if args.corrupt else ""))
    paired = paired_markdown(rows)
    if paired:
        print("\n" + paired)
    for (ds, bb), by_method in summarize(rows).items():  # the main tables last: what a reader looks for first
        print(f"\n{ds} · {bb} · test accuracy (%), mean ± std over seeds {','.join(map(str, args.seeds))}\n")
        print(markdown_table(by_method))
    for protocol in other_protocols(rows):  # each protocol's own table, saying where it chose
        for (ds, bb), by_method in summarize(rows, select_on=protocol).items():
            print(f"\n{ds} · {bb} · test accuracy (%), hyperparameters {SELECT_LABELS[protocol]}\n")
            print(markdown_table(by_method))
    gap = selection_gap_markdown(rows)
    if gap:
        print("\n" + gap)
    average = average_markdown(rows)
    if average:
        print("\n" + average)
    base_to_new = base_to_new_markdown(rows)
    if base_to_new:
        print("\n" + base_to_new)
    return 0


def _suite_preflight(args, settings) -> list[str]:
    """The datasets of a suite or list that open (their split files fetched where they download); the others
    named at the start with what to do, and left out."""
    from .datasets import load_dataset
    from .datasets.download import availability

    available, missing = [], []
    for name in args.datasets:
        try:
            dataset = load_dataset(name, settings, templates=args.templates,
                               prompts=getattr(args, "prompts", None))
            if settings.offline or availability(name) != "downloads":  # images that no download will bring
                dataset.ensure_images()
            available.append(name)
        except UserError as err:
            missing.append(f"  {name}: {err}")
    print(f"crossgate {args.command}: {len(available)} of {len(args.datasets)} datasets available"
          + (f" ({', '.join(available)})" if available else "")
          + ("; left out, with what to do:\n" + "\n".join(missing) if missing else ""), flush=True)
    if not available:
        raise UserError(f"none of the datasets {', '.join(args.datasets)} is available; see the lines above")
    orphans = [s for s in args.shift if not any(s in registered(f"shift-of:{d}") for d in available)]
    if orphans:
        logging.getLogger("crossgate").warning("--shift: %s shift(s) a dataset that is not among the available "
                                               "ones; not scored", ", ".join(orphans))
    return available


def _bench_one(args, settings) -> tuple[list[dict], float | None]:
    """One dataset's runs into args.out (resumed); the rows of this dataset and backbone."""
    from .bench import (
        BenchConfig,
        check_before_work,
        check_out_folder,
        pending_runs,
        run_bench,
        start_fit_workers_early,
    )
    from .methods import METHODS
    from .progress import progress
    from .results import read_rows

    config = BenchConfig(dataset=args.dataset, backbone=args.backbone, shots=args.shots, seeds=args.seeds,
                         methods=args.methods, out=args.out, jobs=args.jobs,
                         configs=bench_method_configs(args),
                         setup={"train_views": ["center", "flip"] if args.flip else ["center"],
                                "templates": args.templates, "corrupt_seed": args.corrupt_seed,
                                "aug_views": args.aug_views, "protocol": args.protocol,
                                # which test images were corrupted: only meaningful with corruptions
                                "corrupt_per_class": args.corrupt_per_class if args.corrupt else None},
                         corruptions=args.corrupt, shifts=args.shift, device=settings.torch_device(),
                         select_on=args.select_on, protocol=args.protocol)
    if args.protocol == "base2new":
        config.methods = _base_to_new_methods(args.methods)
        if args.corrupt or args.shift:
            raise UserError("--protocol base2new scores base and new classes of the clean test split; leave out "
                            "--corrupt and --shift here (--corrupt none)")
    if args.select_on != "few-shot-val" and (args.corrupt or args.shift):
        raise UserError(f"--select-on {args.select_on} measures what a selection protocol is worth on the clean "
                        "test split; leave out --corrupt and --shift here (--corrupt none) and run them under the "
                        "default protocol")
    n_runs = len(config.resolved_methods()) * len(config.shots) * len(config.seeds)  # validates names early
    check_out_folder(config.out)  # what the run will write, checked before any work
    existing = read_rows(config.out.expanduser() / "results.jsonl")  # read once for both
    mixing = check_before_work(config, existing)  # and whether the rows there are comparable
    todo = pending_runs(config, existing)
    built, to_encode = _say_plan(args, settings, config, n_runs, todo, mixing)
    start_fit_workers_early(config, todo)
    start = time.perf_counter()
    encoder, dataset, feats = _load(args, settings, built)
    encode_seconds = time.perf_counter() - start
    # images left out as unreadable (--on-bad-image skip) change every number: part of what must match to resume
    skipped = {s: len(dataset.split(s)) - len(feats.split(s).labels) for s in ("train", "val", "test")}
    config.setup["skipped_images"] = {s: n for s, n in skipped.items() if n}
    config.setup["prompts"] = dataset.prompt_source  # a description bank (kind, sha256) changes every text
    if args.aug_views:
        from .pipeline import add_augmented_views, feature_cache

        draws = dict.fromkeys((k, s) for m, k, s in todo if METHODS.factory(m).aug_views)  # only where used
        feats = add_augmented_views(feats, feature_cache(settings), encoder, dataset, list(draws), args.aug_views)
    start = time.perf_counter()
    with progress(total=len(todo), desc="fits", unit="run", enabled=settings.progress, milestones=True) as bar:
        rows = run_bench(config, feats, encoder.identity, dataset_identity=dataset.identity,
                         on_run=lambda row, key: bar.update(1) if row is not None else None)
    fit_wall = time.perf_counter() - start
    _record_timings(settings, config, encoder, to_encode, encode_seconds, todo, rows, fit_wall)
    return rows, (encode_seconds + fit_wall if todo else None)  # a resumed folder did no work worth timing


def _record_timings(settings, config, encoder, to_encode: int, encode_seconds: float, todo: list, rows: list,
                    fit_wall: float) -> None:
    """This run's measured speeds into CACHE_DIR/timings.json, for the next plan's estimate (timings.py)."""
    from . import timings
    from .bench import fit_processes

    encode = {encoder.identity: to_encode / encode_seconds} if to_encode >= 64 and encode_seconds > 0 else {}
    done = {(m, k, s) for m, k, s in todo}
    fits: dict = {}
    for r in rows:
        if r.get("corruption") is None and r.get("eval_set") is None and (r["method"], r["shots"], r["seed"]) in done:
            fits.setdefault(f"{r['method']}/{r['shots']}", []).append(r.get("fit_seconds", 0.0))
    fit = {key: sum(v) / len(v) for key, v in fits.items()}
    fitted = sum(sum(v) for v in fits.values())
    # what scoring, the corrupted copies, worker start-up and idle cores add to the fits themselves
    overhead = fit_wall * fit_processes(config, todo) / fitted if fitted > 1.0 else None
    timings.record(settings.cache_dir, encode=encode, fit=fit, overhead=overhead)


def _base_to_new_methods(asked: tuple) -> tuple:
    """The asked methods (default: all) that can name unseen classes; the others are said and left out."""
    from .methods import METHODS, new_class_methods

    names = list(asked) or METHODS.names()
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise UserError(f"unknown method {unknown[0]!r}; available: {', '.join(METHODS.names())}")
    able = [m for m in names if m in new_class_methods()]
    left_out = [m for m in names if m not in able]
    if not able:
        raise UserError(f"--protocol base2new: none of {', '.join(names)} can name classes it was not trained on; "
                        f"use {', '.join(new_class_methods())}")
    if left_out:
        print(f"--protocol base2new: not applicable (they cannot name classes they were not trained on), left out: "
              f"{', '.join(left_out)}", flush=True)
    return tuple(able)


def _say_plan(args, settings, config, n_runs: int, todo: list, mixing: str = "") -> tuple:
    """Before any work: what will be encoded and fitted, about how long it takes, and where results go.
    Returns the (dataset, encoder) it built to count the cached images, or (None, None)."""
    from .bench import fit_processes, fit_seconds_estimate
    from .datasets import load_dataset
    from .encoders import create_encoder
    from .pipeline import feature_cache
    from .storage import ensure_writable_dir

    out = config.out.expanduser()
    if not todo:
        print(f"crossgate {args.command}: all {n_runs} runs are already in {out / 'results.jsonl'}; rebuilding "
              f"the reports{mixing}")
        return (None, None), 0
    dataset = load_dataset(args.dataset, settings, templates=args.templates,
                               prompts=getattr(args, "prompts", None))
    encoder = create_encoder(args.backbone, cache_dir=settings.cache_dir, device=settings.torch_device(),
                             decode=settings.decode)
    shifted = [load_dataset(name, settings) for name in config.shifts]  # their images are encoded too
    to_encode, total = feature_cache(settings).images_to_encode(encoder, dataset, args.flip, args.corrupt,
                                                                args.corrupt_seed, args.corrupt_per_class, shifted)
    from . import timings

    device = settings.torch_device()
    cores = os.cpu_count() or 1
    measured = timings.load(settings.cache_dir)
    # this machine's last measured encoding speed; else a first guess (README, Speed: lite ~22 img/s per CPU
    # core, a CLIP-sized model about 5, a GPU thousands), replaced by a measurement after this run
    rate = measured.get("encode", {}).get(encoder.identity)
    basis = "this machine's measured speeds"
    if not rate and to_encode:
        rate, basis = _timed_first_batch(encoder, dataset), "one timed batch"
    if not rate:
        rate, basis = 2000 if device.startswith("cuda") else (22 if args.backbone == "lite" else 5) * cores, \
            "a first guess"
    if not measured.get("fit"):
        basis += " and rough fit times; this run is timed for the next"
    from .methods import METHODS

    # each draw's training images, N times, for the methods that use them (cached ones are not known yet)
    aug = args.aug_views * len(dataset.classnames) * sum(
        k for k, _ in dict.fromkeys((k, s) for m, k, s in todo if METHODS.factory(m).aug_views))
    # start-up, loading and reports as measured; a first guess of a few seconds
    seconds = (to_encode + aug) / rate + fit_seconds_estimate(config, todo, measured) + measured.get("rest", 5.0)
    processes = fit_processes(config, todo)
    n_corrupt = len(config.corruptions)
    corrupt = f", each scored on {n_corrupt} corruption{'s' * (n_corrupt != 1)}" if n_corrupt else ""
    n_methods = len(config.resolved_methods())
    print(f"crossgate {args.command}: {len(todo)} of {n_runs} run{'s' * (n_runs != 1)} to do "
          f"({n_methods} method{'s' * (n_methods != 1)} × "
          f"shots {','.join(map(str, config.shots))} × seeds {','.join(map(str, config.seeds))}{corrupt}) on "
          f"{dataset.name} with {args.backbone}; {to_encode:,} of {total:,} images to encode "
          f"({'all cached' if not to_encode else 'the rest cached' if to_encode < total else 'none cached yet'})"
          + (f" and up to {aug:,} augmented views of training images" if aug else "") + "; "
          f"about {_duration(seconds)} on this machine ({device}, {processes} fit process(es); "
          f"from {basis}). "
          "Results go to "
          f"{out}/ (results.jsonl, summary.md, summary.csv, plots){mixing}.", flush=True)
    ensure_writable_dir(out, "output folder", "--out")  # the folder exists from the start
    return (dataset, encoder), to_encode


def _timed_first_batch(encoder, dataset, n: int = 32) -> float | None:
    """Images per second of one small batch of the dataset through the encoder (a first run on a machine:
    a measurement, not a constant); None when it cannot be read now (the images come later)."""
    from .extraction import encode_batches

    try:
        items = dataset.split("train")
        positions = list(range(min(n, len(items))))
        # untimed warm-up of the same size: the first batch of a size also pays for its memory and kernels
        for _ in encode_batches(encoder, items, positions, len(positions), 0):
            pass
        start = time.perf_counter()
        for _ in encode_batches(encoder, items, positions, len(positions), 0):
            pass
        return len(positions) / (time.perf_counter() - start) if positions else None
    except (UserError, OSError):  # not downloaded yet, or unreadable: the run will say so itself
        return None


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds))} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def cmd_train(args, settings) -> int:
    from .methods import METHODS
    from .model import SavedModel, check_model_folder, save_model
    from .pipeline import fit_one
    from .progress import working

    if args.method not in METHODS:
        raise UserError(f"unknown method {args.method!r}; available: {', '.join(METHODS.names())}")
    check_model_folder(args.out, args.replace)  # before the fit: what saving would wipe is refused now
    config = method_configs_from(args, [args.method]).get(args.method)
    encoder, dataset, feats = _load(args, settings)
    with working(f"fitting {args.method}", settings.progress):
        clf, row = fit_one(feats, args.method, args.shots, args.seed, config, settings.torch_device())
    saved = SavedModel(classifier=clf, method=args.method, backbone=args.backbone,
                       backbone_identity=encoder.identity, classnames=feats.classnames,
                       templates=list(dataset.templates), dataset=dataset.identity,
                       info={**row, "prompts": dataset.prompt_source})
    out = save_model(args.out, saved, replace=args.replace)
    draw = "all train images" if args.shots == "all" else f"{args.shots}-shot seed {args.seed}"
    print(f"{args.method} on {dataset.name} · {args.backbone} · {draw} ({row['split_source']}): "
          f"accuracy train {row['acc_train']:.1f}%, val {row['acc_val']:.1f}%, "
          f"test {row['acc_test']:.1f}% ({row['n_test']} images); fit {row['fit_seconds']:.1f} s")
    print(f"saved {out}; classify images with `crossgate predict {out} IMAGE...`")
    return 0


def _image_files(inputs: list[Path]) -> list[Path]:
    """Files as given; folders searched recursively for images, sorted; a file named twice (or named and
    inside a named folder) once, where it first appears."""
    from .datasets.imagefolder import EXTENSIONS, image_files

    files, seen = [], set()
    for p in inputs:
        if p.is_dir():
            found = image_files(p)
            if not found:
                raise UserError(f"folder {p} has no images ({', '.join(sorted(EXTENSIONS))}); give image files")
        elif p.is_file():
            found = [p]
        elif p.exists():  # a FIFO, a socket, a device: reading it could block or never end
            raise UserError(f"{p} is not a regular file or folder (a pipe, socket or device); give image files")
        else:
            raise UserError(f"no such image file or folder: {p}")
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                files.append(f)
    return files


def cmd_predict(args, settings) -> int:
    import json

    import numpy as np

    from .encoders import create_encoder
    from .model import load_model
    from .pipeline import encode_files

    model = load_model(args.model)
    files = _image_files(args.images)
    name = args.backbone or model.backbone
    # a model file never chooses a file to read: a local checkpoint comes from the command line
    encoder = create_encoder(name, cache_dir=settings.cache_dir, device=settings.torch_device(),
                             decode=settings.decode, allow_files=args.backbone is not None)
    model.check_backbone(encoder.identity, name)
    x, files, bad = encode_files(encoder, files, settings)
    if bad:
        print(f"crossgate: skipped {len(bad)} unreadable image(s): {', '.join(map(str, bad))}", file=sys.stderr)
    clf = model.classifier
    proba = clf.predict_proba(x)
    explain = clf.explain(x) if hasattr(clf, "explain") else None
    for i, path in enumerate(files):
        top = np.argsort(-proba[i], kind="stable")[:args.top]
        classes = [{"class": model.classnames[c], "probability": round(float(proba[i, c]), 6)} for c in top]
        texts = []
        if explain is not None:
            indices, weights = explain
            texts = [{"text": clf.texts_[j], "class": model.classnames[clf.text_labels_[j]],
                      "weight": round(float(w), 6)} for j, w in zip(indices[i][:args.texts], weights[i][:args.texts],
                                                                   strict=True)]
        if args.json:
            print(json.dumps({"image": str(path), "top": classes, **({"selected_texts": texts} if texts else {})}))
            continue
        print(path)
        for c in classes:
            print(f"  {c['probability']:7.2%}  {c['class']}")
        for t in texts:
            print(f"    gate {t['weight']:.3f}  [{t['class']}] {t['text']}")
    return 0


def cmd_explain(args, settings) -> int:
    import numpy as np

    from .methods import METHODS
    from .pipeline import fit_one
    from .progress import working

    if not hasattr(METHODS.factory(args.method), "explain"):
        raise UserError(f"method {args.method!r} has no gate to explain; use gate or gate-joint")
    config = method_configs_from(args, [args.method]).get(args.method)
    encoder, dataset, feats = _load(args, settings)
    with working(f"fitting {args.method} on the {args.shots}-shot draw", settings.progress):
        clf, _ = fit_one(feats, args.method, args.shots, args.seed, config, settings.torch_device())
    images, split_items = feats.split(args.split), dataset.split(args.split)
    positions = images.kept if images.kept is not None else np.arange(len(images.labels))  # rows -> split positions
    if args.images is None:
        chosen = [int(np.flatnonzero(images.labels == c)[0]) for c in np.unique(images.labels)]
    else:
        n = len(split_items)
        bad = [i for i in args.images if i >= n]
        if bad:
            raise UserError(f"position {bad[0]} is out of range: the {args.split} split has {n} images "
                            f"(positions 0 to {n - 1})")
        chosen = list(images.rows(np.asarray(args.images), args.split))
    x = images.x[chosen]
    indices, weights = clf.explain(x)
    predicted = clf.predict(x)
    names = feats.classnames
    paths = split_items.paths
    print(f"{args.method} on {dataset.name} · {args.backbone} · {args.shots}-shot seed {args.seed}: "
          f"the texts each image selected (k = {indices.shape[1]}), with their weights")
    for row, i in enumerate(chosen):
        at = int(positions[i])
        where = paths[at] if paths is not None else "embedded in memory, no file"
        print(f"\n{args.split}[{at}] {where}: true {names[images.labels[i]]!r}, predicted {names[predicted[row]]!r}")
        for j, w in zip(indices[row], weights[row], strict=True):
            mark = "*" if clf.text_labels_[j] == images.labels[i] else " "
            print(f"  {w:6.3f} {mark} [{names[clf.text_labels_[j]]}] {clf.texts_[j]}")
    rate = clf.top1_true_class_rate(images.x, images.labels)
    print(f"\n{args.split}[i]: position i of the split (0-based), as `crossgate split show {args.dataset} --split "
          f"{args.split}` lists them. * = a text of the true class. Top-1 selection is of the true class for "
          f"{100 * rate:.1f}% of the {len(images.labels)} {args.split} images.")
    return 0


def cmd_split(args, settings) -> int:
    """Print a split's images (paths relative to the images folder, or 0-based positions for a dataset
    embedded in memory), or those of the few-shot draw from it, in index order."""
    import numpy as np

    from .datasets import choose_few_shot, load_dataset

    dataset = load_dataset(args.dataset, settings)
    items = dataset.split(args.split)
    if args.split == "test":
        if args.shots is not None or args.seed is not None:
            raise UserError("the test split has no few-shot draw; drop --shots and --seed, or use --split train/val")
        indices, source = np.arange(len(items)), "the whole test split"
    else:
        if args.shots is None:
            raise UserError(f"--split {args.split} shows a few-shot draw: give --shots K (and --seed S, default 1; "
                            "or --split test for every test image)")
        args.seed = 1 if args.seed is None else args.seed  # as train and explain
        train, val = dataset.split("train"), dataset.split("val")
        split = choose_few_shot(train.labels, val.labels, args.shots, args.seed, dataset.classnames,
                                dataset.index_dir, train.paths, val.paths)
        indices = split.val if args.split == "val" else split.train
        source = f"{args.shots}-shot seed {args.seed} from {split.source}"
    what = "paths" if items.paths is not None else "0-based positions (embedded in memory, no files)"
    print(f"# {dataset.name} {args.split}: {len(indices)} images, {source}; {what}", file=sys.stderr)
    for i in indices:
        print(items.paths[i] if items.paths is not None else int(i))
    return 0


def cmd_report(args, settings) -> int:
    from .report import summary_markdown, write_reports
    from .results import read_rows

    results = args.dir / "results.jsonl"
    if results.exists() and not results.is_file():
        raise UserError(f"{results} is not a file; give the folder bench wrote its results.jsonl into")
    rows = read_rows(results)
    if not rows:
        raise UserError(f"no results in {args.dir / 'results.jsonl'}; run `crossgate bench --out {args.dir}` first")
    if not os.access(args.dir, os.W_OK):
        raise UserError(f"{args.dir} is not writable, and report writes summary.md, summary.csv and plots beside "
                        "results.jsonl; copy the folder somewhere writable and run report there")
    written = write_reports(args.dir, rows)
    print("wrote " + ", ".join(str(p) for p in written) + "\n")
    print(summary_markdown(rows, main_last=True), end="")  # the main tables last, where a reader looks
    return 0


def _log_warnings() -> None:
    import logging

    class StderrHandler(logging.StreamHandler):
        """Writes to whatever sys.stderr is at the time (tests and tqdm swap it)."""

        @property
        def stream(self):
            return sys.stderr

        @stream.setter
        def stream(self, value):
            pass

    log = logging.getLogger("crossgate")
    log.propagate = False  # a library's logging.basicConfig on the root logger would print ours twice
    root = logging.getLogger()
    if not root.handlers:  # open_clip warns through the root logger ("No pretrained weights loaded" for a
        root.addHandler(logging.NullHandler())  # random model on purpose): a handler stops basicConfig
    if not log.handlers:
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("crossgate: %(levelname)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.WARNING)


COMMANDS = {"backbones": cmd_list, "datasets": cmd_list, "methods": cmd_list, "extract": cmd_extract,
            "bench": cmd_bench, "demo": cmd_bench, "train": cmd_train, "predict": cmd_predict,
            "explain": cmd_explain, "split": cmd_split,
            "report": cmd_report}


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()  # signal handlers can only be set there


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: worker pools are ended on the way out, finished work is kept."""


def _raise_terminated(signum, frame):
    raise Terminated()


def _command_of(argv: list[str]) -> str:
    """The command argv names (its first word that is one), or "" for none (`crossgate --help`)."""
    return next((word for word in argv if word in _HELP), "")


TORCH_PACKAGES = ("torch", "torchvision", "timm", "open_clip")


def broken_install(err: BaseException) -> str | None:
    """The one-line diagnosis when `err` was raised while importing torch or a package built on it (a
    half-done install: torchvision built for another torch, a missing library), else None."""
    import importlib.metadata
    import traceback

    # module-level code of one of those packages, running: an import failed, not a computation
    package = next((p for f in reversed(traceback.extract_tb(err.__traceback__)) if f.name == "<module>"
                    for p in TORCH_PACKAGES if p in Path(f.filename).parts), None)
    if package is None:
        return None

    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "missing"

    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return (f"{package} cannot be imported ({type(err).__name__}: {first}); installed: torch {version('torch')}, "
            f"torchvision {version('torchvision')}, which must be a matching pair: reinstall both from one index, "
            "e.g. pip install --force-reinstall torch torchvision --index-url https://download.pytorch.org/whl/cpu "
            "(README, Quick start)")


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except (ImportError, RuntimeError, OSError, AttributeError) as err:
        diagnosis = broken_install(err)
        if diagnosis is None or "--debug" in (sys.argv[1:] if argv is None else argv):
            raise
        print(f"crossgate: error: {diagnosis}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None = None) -> int:
    import signal

    args = build_parser(_command_of(sys.argv[1:] if argv is None else argv)).parse_args(argv)
    if threading_main():
        signal.signal(signal.SIGTERM, _raise_terminated)
    if vars(args).get("offline") or os.environ.get("CROSSGATE_OFFLINE", "") not in ("", "0"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # pretrained weights from local caches only
    _log_warnings()
    from .allocator import keep_freed_memory

    keep_freed_memory()  # this process's fits and extraction reuse freed memory (allocator.py)
    try:
        if vars(args).get("dataset"):  # DIR and DIR/ are one dataset: one name in rows and tables
            args.datasets = dataset_names(args.dataset)
            if len(args.datasets) > 1 and args.command not in ("bench", "demo"):
                raise UserError(f"crossgate {args.command} takes one dataset, not {args.dataset!r}; a list or a "
                                "suite is for bench")
            args.dataset = args.datasets[0]
        return COMMANDS[args.command](args, build_settings(args))
    except UserError as err:
        if vars(args).get("debug"):
            raise
        print(f"crossgate: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `crossgate split show ... | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:
        if vars(args).get("debug") or err.errno != errno.ENAMETOOLONG:
            raise
        print(f"crossgate: error: a file name is too long for the file system ({err.filename}); use a shorter "
              "path or folder name", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"crossgate: {'terminated' if isinstance(err, Terminated) else 'interrupted'}; finished work is kept "
              "and the next run resumes", file=sys.stderr)
        return 143 if isinstance(err, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
