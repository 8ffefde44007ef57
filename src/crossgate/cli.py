"""The command line: the only module that reads argv and the environment. Thin over the library."""
from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import time
from pathlib import Path

from . import __version__
from .errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad input in one line (no usage dump) and exits with status 2."""

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


def int_list(text: str) -> tuple[int, ...]:
    """'1,4,16' -> (1, 4, 16); every item a positive integer, no duplicates."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list of positive integers, got nothing")
    return _unique(tuple(positive_int(t) for t in items), text)


MAX_SEED = 2 ** 63 - 1  # what torch's and numpy's generators take


def seed_value(text: str) -> int:
    value = positive_int(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed must be at most 2**63 - 1, got {text}")
    return value


def seed_list(text: str) -> tuple[int, ...]:
    """'1,2,3' -> (1, 2, 3): seeds, each within what the generators take, no duplicates."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list of seeds, got nothing")
    return _unique(tuple(seed_value(t) for t in items), text)


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


def _field_type(cls, name: str):
    from .config import parse_field

    def parse(text: str):
        try:
            return parse_field(cls, name, text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = name  # argparse names the type in its error message
    return parse


def add_method_flags(p: argparse.ArgumentParser) -> None:
    from .config import config_fields, default_text

    for prefix, (cls, methods) in method_flag_groups().items():
        group = p.add_argument_group(f"{', '.join(methods)} (--{prefix}-*)")
        for f in config_fields(cls):
            group.add_argument(f"--{prefix}-{f.name.replace('_', '-')}", dest=f"config:{prefix}:{f.name}",
                               type=_field_type(cls, f.name), default=None,
                               metavar=f.name.upper(),
                               help=f"{f.metadata.get('help', '')} (default: {default_text(f)})")


def method_configs_from(args) -> dict:
    """method name -> its config: the defaults, with the flags given on the command line."""
    from .config import config_fields

    configs = {}
    for prefix, (cls, methods) in method_flag_groups().items():
        given = {f.name: getattr(args, f"config:{prefix}:{f.name}", None) for f in config_fields(cls)}
        config = cls(**{k: v for k, v in given.items() if v is not None})
        configs.update({m: config for m in methods})
    return configs


def add_template_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--flip", action="store_true",
                   help="also train on horizontally mirrored copies of the training images (Lin et al.'s flip view)")
    p.add_argument("--template", action="append", dest="templates", metavar="TEXT", type=template_text,
                   help="imagefolder datasets: a prompt template with one {} for the class name; repeat for "
                        "several (default: a set of 7 photo templates)")


def template_text(text: str) -> str:
    from .datasets.base import check_template
    from .errors import UserError

    try:
        return check_template(text)
    except UserError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache-dir", type=Path, default=None,
                        help="feature cache (default: $CROSSGATE_CACHE or ~/.cache/crossgate)")
    common.add_argument("--data-root", type=Path, default=None,
                        help="datasets on disk (default: $CROSSGATE_DATA or CACHE_DIR/data)")
    common.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where encoders run (default: auto)")
    common.add_argument("--batch-size", type=positive_int, default=64, help="images per encoder batch")
    common.add_argument("--workers", type=non_negative_int, default=None,
                        help="processes reading and decoding images (default: 8 on a GPU; on a CPU 0, i.e. in "
                             "the main process, up to 4 cores, else a quarter of the cores, at most 4)")
    common.add_argument("--decode", choices=("auto", "pil", "torch"), default="auto",
                        help="how images become pixels: pil (decode and resize on the CPU), torch (JPEGs decoded "
                             "and resized on the encoder's device; nvjpeg on a GPU); default auto: torch on a "
                             "GPU, pil on a CPU")
    common.add_argument("--no-progress", action="store_true", help="hide progress bars")
    common.add_argument("--offline", action="store_true",
                        help="never download datasets or weights (also CROSSGATE_OFFLINE=1); name missing files")
    common.add_argument("--on-bad-image", choices=("fail", "skip"), default="fail",
                        help="unreadable images: fail listing every one (default), or skip them and say how many")
    common.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return common


# What makes `crossgate demo` take minutes on two cores (README, "What the demo runs"): Lin et al.'s grid
# with a twentieth of the updates, validated every 5 (their 128 validations), and corrupted copies of a
# class-balanced test subset. `bench` keeps the full protocol.
DEMO_PROBE = {"iterations": 640, "eval_every": 5}
DEMO_CORRUPT_PER_CLASS = 50


def build_parser() -> argparse.ArgumentParser:
    from .bench import DEFAULT_SEEDS, DEFAULT_SHOTS
    from .corruptions import ALL as CORRUPTIONS

    common = _common()
    parser = _Parser(prog="crossgate", description="Few-shot image classification on frozen vision-language "
                     "encoders, with dynamic gating fusion.",
                     epilog="Run `crossgate demo` for the default few-shot benchmark.")
    parser.add_argument("--version", action="version", version=f"crossgate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("backbones", parents=[common], help="list the image/text backbones")
    p.add_argument("--all", action="store_true", help="also list every open_clip architecture/pretrained tag")
    sub.add_parser("datasets", parents=[common], help="list the datasets")
    sub.add_parser("methods", parents=[common], help="list the few-shot methods")

    p = sub.add_parser("extract", parents=[common], help="fill the feature cache without fitting anything")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--backbone", default="lite")
    add_template_flag(p)

    def add_bench_args(p, out_default, corrupt_default="", corrupt_per_class=None):
        p.add_argument("--dataset", default="fashion-mnist", help="dataset name (default: fashion-mnist)")
        p.add_argument("--backbone", default="lite", help="backbone name (default: lite)")
        p.add_argument("--shots", type=int_list, default=DEFAULT_SHOTS, help="e.g. 1,4,16 (default: 1,2,4,8,16)")
        p.add_argument("--seeds", type=seed_list, default=DEFAULT_SEEDS, help="e.g. 1,2,3 (default: 1,2,3)")
        p.add_argument("--methods", type=name_list, default=(), help="'all' (default) or m1,m2")
        p.add_argument("--out", type=Path, default=Path(out_default),
                       help=f"output directory (default: {out_default}); finished runs in it are skipped")
        p.add_argument("--jobs", type=positive_int, default=min(os.cpu_count() or 1, 4),
                       help="worker processes fitting (shots, seed) draws in parallel (default: cores, at most 4)")
        p.add_argument("--corrupt", type=corruption_specs, metavar="SPEC[,SPEC...]",
                       default=corruption_specs(corrupt_default) if corrupt_default else (),
                       help="also score the fitted heads on corrupted test data: NAME[:S or S1-S2] with severity "
                            f"1-5 (default 3), NAME one of {', '.join(CORRUPTIONS)} or all; 'none' for none "
                            f"(default: {corrupt_default or 'none'})")
        p.add_argument("--corrupt-seed", type=non_negative_int, default=0,
                       help="seed of the corruptions (default: 0; the same corrupted data for every run)")
        p.add_argument("--corrupt-per-class", type=positive_int, default=corrupt_per_class, metavar="N",
                       help="corrupt only the first N test images of each class; the robustness rows compare "
                            "on those images (default: " + (f"{corrupt_per_class})" if corrupt_per_class
                                                            else "every test image)"))
        add_template_flag(p)
        add_method_flags(p)

    add_bench_args(sub.add_parser("bench", parents=[common], help="few-shot benchmark: methods x shots x seeds"),
                   "crossgate-runs/bench")
    demo = sub.add_parser("demo", parents=[common],
                          help="the default benchmark, sized for minutes on a laptop: lite backbone, embedded "
                               "Fashion-MNIST, every method, shots 1-16, seeds 1-3; Lin et al.'s probe search "
                               f"with {DEMO_PROBE['iterations']:,} updates per setting (bench: 12,800); every "
                               f"corruption at severity 3 on {DEMO_CORRUPT_PER_CLASS} test images per class")
    add_bench_args(demo, "crossgate-demo", corrupt_default="all:3", corrupt_per_class=DEMO_CORRUPT_PER_CLASS)
    for action in demo._actions:  # the demo's own defaults for the probe search, said in its --help
        field = action.dest.removeprefix("config:probe:")
        if action.dest.startswith("config:probe:") and field in DEMO_PROBE:
            action.default = DEMO_PROBE[field]
            action.help = re.sub(r"\(default: [^)]*\)$", f"(default in the demo: {DEMO_PROBE[field]}; "
                                 "bench: Lin et al.'s)", action.help)

    p = sub.add_parser("train", parents=[common], help="fit one method on one few-shot draw and save it as a model")
    p.add_argument("--dataset", default="fashion-mnist", help="dataset name or imagefolder:PATH")
    p.add_argument("--backbone", default="lite")
    p.add_argument("--method", default="gate-joint", help="any method of `crossgate methods` (default: gate-joint)")
    p.add_argument("--shots", type=shots_value, default="all",
                   help="training images per class, or 'all' for every train image (default: all)")
    p.add_argument("--seed", type=seed_value, default=1, help="few-shot draw and method seed (default: 1)")
    p.add_argument("--out", type=Path, required=True, help="model folder to write (model.safetensors + model.json)")
    add_template_flag(p)
    add_method_flags(p)

    p = sub.add_parser("predict", parents=[common], help="classify image files with a saved model")
    p.add_argument("model", type=Path, help="a folder written by `crossgate train`")
    p.add_argument("images", nargs="+", type=Path, help="image files, or folders to search for images")
    p.add_argument("--backbone", default=None,
                   help="encoder to use (default: the model's); refused if it differs from the model's")
    p.add_argument("--top", type=positive_int, default=3, help="classes to show per image (default: 3)")
    p.add_argument("--texts", type=positive_int, default=3,
                   help="gate methods: selected texts to show per image (default: 3)")
    p.add_argument("--json", action="store_true", help="one JSON object per image instead of text")

    p = sub.add_parser("explain", parents=[common],
                       help="fit a gate method and print, per image, the texts the gate selected")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--backbone", default="lite")
    p.add_argument("--method", default="gate-joint", help="gate or gate-joint (default: gate-joint)")
    p.add_argument("--shots", type=positive_int, default=4)
    p.add_argument("--seed", type=seed_value, default=1)
    p.add_argument("--split", choices=("train", "val", "test"), default="test", help="images to explain")
    p.add_argument("--images", type=int_list, default=None,
                   help="indices into the split (default: the first of each class)")
    add_template_flag(p)
    add_method_flags(p)

    p = sub.add_parser("split", parents=[common], help="few-shot splits: `split show DATASET --shots K --seed S`")
    split_sub = p.add_subparsers(dest="split_command", metavar="ACTION", parser_class=_Parser)
    split_sub.required = True
    q = split_sub.add_parser("show", parents=[common], help="print the few-shot training images, one per line")
    q.add_argument("dataset")
    q.add_argument("--shots", type=positive_int, required=True)
    q.add_argument("--seed", type=seed_value, required=True)
    q.add_argument("--val", action="store_true", help="print the few-shot validation images instead")

    p = sub.add_parser("report", parents=[common], help="rebuild summary tables and plots from DIR/results.jsonl")
    p.add_argument("dir", type=Path)
    return parser


def build_settings(args):
    from .settings import Settings, default_cache_dir, default_data_root

    return Settings(cache_dir=(args.cache_dir or default_cache_dir()).expanduser(),
                    data_root=(args.data_root or default_data_root()).expanduser(), device=args.device,
                    batch_size=args.batch_size, workers=args.workers, decode=args.decode,
                    progress=not args.no_progress,
                    on_bad_image=args.on_bad_image,
                    **({"offline": True} if args.offline else {}))


def _load(args, settings):
    """The encoder, the dataset and their (cached) features, with the corrupted test data --corrupt asks for."""
    from .pipeline import load_features

    return load_features(settings, args.dataset, args.backbone, getattr(args, "templates", None),
                         getattr(args, "flip", False), getattr(args, "corrupt", ()), getattr(args, "corrupt_seed", 0),
                         getattr(args, "corrupt_per_class", None))


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
        for name in reg.names():
            print(f"{name:<20} {reg.help(name)}")
        if args.command == "datasets":
            print(f"{'imagefolder:PATH':<20} your images, one sub-folder per class (optional train/ val/ test/)")
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
        dataset = load_dataset(args.dataset, settings, templates=args.templates)
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

    from tqdm.auto import tqdm

    from .bench import BenchConfig, run_bench
    from .report import markdown_table, paired_markdown, robustness_markdown, summarize, write_reports

    config = BenchConfig(dataset=args.dataset, backbone=args.backbone, shots=args.shots, seeds=args.seeds,
                         methods=args.methods, out=args.out, configs=method_configs_from(args), jobs=args.jobs,
                         setup={"train_views": ["center", "flip"] if args.flip else ["center"],
                                "templates": args.templates, "corrupt_seed": args.corrupt_seed},
                         corruptions=args.corrupt, device=settings.torch_device())
    n_runs = len(config.resolved_methods()) * len(config.shots) * len(config.seeds)  # validates names early
    encoder, dataset, feats = _load(args, settings)
    with tqdm(total=n_runs, desc="fits", unit="run", disable=not settings.progress, dynamic_ncols=True) as bar:
        rows = run_bench(config, feats, encoder.identity, on_run=lambda row, key: bar.update(1),
                         dataset_identity=dataset.identity)
    written = write_reports(config.out)
    for (ds, bb), by_method in summarize(rows).items():
        print(f"\n{ds} · {bb} · test accuracy (%), mean ± std over seeds {','.join(map(str, config.seeds))}\n")
        print(markdown_table(by_method))
    paired = paired_markdown(rows)
    if paired:
        print("\n" + paired)
    if config.corruptions:
        print("\n" + robustness_markdown(rows))
    print(f"\nwrote {config.out / 'results.jsonl'}, " + ", ".join(p.name for p in written))
    return 0


def cmd_train(args, settings) -> int:
    from .methods import METHODS
    from .model import SavedModel, save_model
    from .pipeline import fit_one

    if args.method not in METHODS:
        raise UserError(f"unknown method {args.method!r}; available: {', '.join(METHODS.names())}")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"{args.out} is a file; a model is saved as a folder, choose another --out")
    encoder, dataset, feats = _load(args, settings)
    clf, row = fit_one(feats, args.method, args.shots, args.seed, method_configs_from(args).get(args.method),
                       settings.torch_device())
    out = save_model(args.out, SavedModel(classifier=clf, method=args.method, backbone=args.backbone,
                                          backbone_identity=encoder.identity, classnames=feats.classnames,
                                          templates=list(dataset.templates), dataset=dataset.identity, info=row))
    draw = "all train images" if args.shots == "all" else f"{args.shots}-shot seed {args.seed}"
    print(f"{args.method} on {dataset.name} · {args.backbone} · {draw} ({row['split_source']}): "
          f"accuracy train {row['acc_train']:.1f}%, val {row['acc_val']:.1f}%, "
          f"test {row['acc_test']:.1f}% ({row['n_test']} images); fit {row['fit_seconds']:.1f} s")
    print(f"saved {out}; classify images with `crossgate predict {out} IMAGE...`")
    return 0


def _image_files(inputs: list[Path]) -> list[Path]:
    """Files as given; folders searched recursively for images, sorted."""
    from .datasets.imagefolder import EXTENSIONS, image_files

    files = []
    for p in inputs:
        if p.is_dir():
            found = image_files(p)
            if not found:
                raise UserError(f"folder {p} has no images ({', '.join(sorted(EXTENSIONS))}); give image files")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"no such image file or folder: {p}")
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
    if args.backbone is None and model.backbone.startswith("openclip:") and "/" in model.backbone.partition("/")[2]:
        # a model file never chooses a file to read: a local checkpoint comes from the command line
        raise UserError(f"this model was fitted with a local checkpoint ({model.backbone}); give it with --backbone "
                        "openclip:ARCH/PATH (the file is checked against the model's backbone identity)")
    encoder = create_encoder(name, cache_dir=settings.cache_dir, device=settings.torch_device(),
                             decode=settings.decode)
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

    if not hasattr(METHODS.factory(args.method), "explain"):
        raise UserError(f"method {args.method!r} has no gate to explain; use gate or gate-joint")
    encoder, dataset, feats = _load(args, settings)
    clf, _ = fit_one(feats, args.method, args.shots, args.seed, method_configs_from(args).get(args.method),
                     settings.torch_device())
    images = feats.split(args.split)
    if args.images is None:
        chosen = [int(np.flatnonzero(images.labels == c)[0]) for c in np.unique(images.labels)]
    else:
        chosen = [i - 1 for i in args.images]  # 1-based on the command line, like the listing below
        bad = [i + 1 for i in chosen if i >= len(images.labels)]
        if bad:
            raise UserError(f"image {bad[0]} is out of range: the {args.split} split has {len(images.labels)} images")
    x = images.x[chosen]
    indices, weights = clf.explain(x)
    predicted = clf.predict(x)
    names = feats.classnames
    print(f"{args.method} on {dataset.name} · {args.backbone} · {args.shots}-shot seed {args.seed}: "
          f"the texts each image selected (k = {indices.shape[1]}), with their weights")
    for row, i in enumerate(chosen):
        print(f"\n{args.split} image {i + 1}: true {names[images.labels[i]]!r}, predicted {names[predicted[row]]!r}")
        for j, w in zip(indices[row], weights[row], strict=True):
            mark = "*" if clf.text_labels_[j] == images.labels[i] else " "
            print(f"  {w:6.3f} {mark} [{names[clf.text_labels_[j]]}] {clf.texts_[j]}")
    rate = clf.top1_true_class_rate(images.x, images.labels)
    print(f"\n* = a text of the true class. Top-1 selection is of the true class for {100 * rate:.1f}% of the "
          f"{len(images.labels)} {args.split} images.")
    return 0


def cmd_split(args, settings) -> int:
    """Print the chosen few-shot images as paths relative to the images folder, in index order."""
    from .datasets import choose_few_shot, load_dataset

    dataset = load_dataset(args.dataset, settings)
    train, val = dataset.split("train"), dataset.split("val")
    split = choose_few_shot(train.labels, val.labels, args.shots, args.seed, dataset.classnames,
                            dataset.index_dir, train.paths, val.paths)
    items, indices = (val, split.val) if args.val else (train, split.train)
    if items.paths is None:
        raise UserError(f"{dataset.name} is embedded in memory and has no image files; "
                        "split show lists datasets on disk")
    print(f"# {dataset.name} {args.shots}-shot seed {args.seed}: {len(indices)} images from {split.source}",
          file=sys.stderr)
    for i in indices:
        print(items.paths[i])
    return 0


def cmd_report(args, settings) -> int:
    from .report import summary_markdown, write_reports
    from .results import read_rows

    rows = read_rows(args.dir / "results.jsonl")
    if not rows:
        raise UserError(f"no results in {args.dir / 'results.jsonl'}; run `crossgate bench --out {args.dir}` first")
    if not os.access(args.dir, os.W_OK):
        raise UserError(f"{args.dir} is not writable, and report writes summary.md, summary.csv and plots beside "
                        "results.jsonl; copy the folder somewhere writable and run report there")
    written = write_reports(args.dir, rows)
    print(summary_markdown(rows))
    print("wrote " + ", ".join(str(p) for p in written))
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.offline or os.environ.get("CROSSGATE_OFFLINE", "") not in ("", "0"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # pretrained weights from local caches only
    _log_warnings()
    try:
        return COMMANDS[args.command](args, build_settings(args))
    except UserError as err:
        if args.debug:
            raise
        print(f"crossgate: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if args.debug or err.errno != errno.ENAMETOOLONG:
            raise
        print(f"crossgate: error: a file name is too long for the file system ({err.filename}); use a shorter "
              "path or folder name", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `crossgate split show ... | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("crossgate: interrupted; finished work is kept and the next run resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
