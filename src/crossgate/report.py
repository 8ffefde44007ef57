"""results.jsonl -> tables (Markdown, CSV) and accuracy-vs-shots plots. Reads rows; logs only what a plot
cannot draw."""
from __future__ import annotations

import csv
import io
import logging
import re
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from .results import (
    DEFAULT_SELECT,
    SELECT_LABELS,
    SELECT_ON,
    base_to_new_row,
    clean_row,
    harmonic_mean,
    main_row,
    read_rows,
    selected_on,
)
from .storage import OutputFolder


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds (ddof=1; 0 for a single seed)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else 0.0)


def summarize(rows: list[dict], metric: str = "acc_test",
              select_on: str = DEFAULT_SELECT) -> dict[tuple, dict[str, dict[int, tuple]]]:
    """{(dataset, backbone): {method: {shots: (mean, std, n_seeds)}}}, methods in first-seen order, of the
    rows chosen by one selection protocol (crossgate's unless `select_on` says otherwise)."""
    values: dict[tuple, dict[str, dict[int, list]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        # the clean test set; corrupted and shift-set rows, and other protocols, have tables of their own
        if clean_row(r) and selected_on(r) == select_on:
            values[(r["dataset"], r["backbone"])][r["method"]][int(r["shots"])].append(r[metric])
    return {group: {m: {k: (*mean_std(v), len(v)) for k, v in sorted(by_shots.items())}
                    for m, by_shots in methods.items()}
            for group, methods in values.items()}


def markdown_table(by_method: dict[str, dict[int, tuple]]) -> str:
    shots = sorted({k for per in by_method.values() for k in per})
    lines = ["| method | " + " | ".join(f"{k}-shot" for k in shots) + " |",
             "|---|" + "---:|" * len(shots)]
    most = max((per[k][2] for per in by_method.values() for k in per), default=0)

    def cell(mean, std, n):  # one seed has no spread; fewer seeds than the rest of the table are marked
        text = f"{mean:.1f} ± {std:.1f}" if n > 1 else f"{mean:.1f}"
        return text + (f" ({n} seed{'s' * (n != 1)})" if n != most else "")

    for method, per in by_method.items():
        cells = [cell(*per[k]) if k in per else "" for k in shots]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


GATED = "gate-joint"  # the method the paired comparison is about


def paired_differences(rows: list[dict], method: str = GATED) -> dict[tuple, dict[int, dict]]:
    """{(dataset, backbone): {shots: {"best_other", "diffs" (per seed), "mean", "std"}}}: `method` minus the
    other method with the best mean at that shot count, seed by seed, so on the same few-shot draws."""
    out: dict = {}
    for group, by_method in summarize(rows).items():
        if method not in by_method:
            continue
        acc = {(r["method"], int(r["shots"]), r["seed"]): r["acc_test"] for r in rows
               if main_row(r) and (r["dataset"], r["backbone"]) == group}
        per_shots = {}
        for shots in by_method[method]:
            others = {m: per[shots][0] for m, per in by_method.items() if m != method and shots in per}
            if not others:
                continue
            best = max(others, key=others.get)
            seeds = sorted(s for m, k, s in acc if m == method and k == shots and (best, k, s) in acc)
            diffs = [round(acc[(method, shots, s)] - acc[(best, shots, s)], 4) for s in seeds]
            if diffs:
                per_shots[shots] = {"best_other": best, "seeds": seeds, "diffs": diffs, **dict(
                    zip(("mean", "std"), mean_std(diffs), strict=True))}
        out[group] = per_shots
    return out


def paired_markdown(rows: list[dict], method: str = GATED) -> str:
    parts = []
    for (dataset, backbone), per_shots in paired_differences(rows, method).items():
        parts += [f"### {method} minus the best other method · {dataset} · {backbone} (test points, same draws)",
                  "", "| shots | best other (mean) | per seed | mean ± std |", "|---:|---|---|---:|"]
        for shots, d in per_shots.items():
            per_seed = ", ".join(f"s{s}: {v:+.1f}" for s, v in zip(d["seeds"], d["diffs"], strict=True))
            parts.append(f"| {shots} | {d['best_other']} | {per_seed} | {d['mean']:+.1f} ± {d['std']:.1f} |")
        parts.append("")
    return "\n".join(parts)


def base_choices(rows: list[dict], method: str = GATED) -> dict[tuple, dict[int, dict[str, int]]]:
    """{(dataset, backbone): {shots: {base: runs}}}: how often `method` chose each base on validation."""
    out: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for r in rows:
        hparams = r.get("hparams")
        base = hparams.get("base") if isinstance(hparams, dict) else None
        if r["method"] == method and main_row(r) and isinstance(base, str):
            out[(r["dataset"], r["backbone"])][int(r["shots"])][base] += 1
    return {g: {k: dict(sorted(v.items())) for k, v in sorted(per.items())} for g, per in out.items()}


def base_choices_markdown(rows: list[dict], method: str = GATED) -> str:
    parts = []
    for (dataset, backbone), per_shots in base_choices(rows, method).items():
        bases = sorted({b for per in per_shots.values() for b in per})
        parts += [f"### {method}: the base chosen on validation · {dataset} · {backbone} (runs per shot count)", "",
                  "| shots | " + " | ".join(bases) + " |", "|---:|" + "---:|" * len(bases)]
        parts += [f"| {k} | " + " | ".join(str(per.get(b, 0)) for b in bases) + " |" for k, per in per_shots.items()]
        parts.append("")
    return "\n".join(parts)


AVERAGE = "Average"  # the column (and the csv's dataset) of the mean over datasets, as the papers print it


def summarize_average(rows: list[dict]) -> dict[tuple, dict[str, dict[str, float]]]:
    """{(backbone, shots): {method: {dataset: seed mean, ..., "Average": the mean of those}}} for backbones
    with two or more datasets; a method lacking a dataset at that shot count gets no Average (a mean over
    fewer datasets would not compare)."""
    table = summarize(rows)
    out: dict = {}
    for backbone in dict.fromkeys(bb for _, bb in table):
        datasets = [ds for ds, bb in table if bb == backbone]
        if len(datasets) < 2:
            continue
        shots = {k for ds in datasets for per in table[(ds, backbone)].values() for k in per}
        methods = list(dict.fromkeys(m for ds in datasets for m in table[(ds, backbone)]))
        for k in sorted(shots):
            cells = {}
            for m in methods:
                per = {ds: table[(ds, backbone)][m][k][0] for ds in datasets
                       if k in table[(ds, backbone)].get(m, {})}
                if per:
                    cells[m] = {**per, **({AVERAGE: float(np.mean(list(per.values())))}
                                          if len(per) == len(datasets) else {})}
            out[(backbone, k)] = {"datasets": datasets, "methods": cells}
    return out


def average_markdown(rows: list[dict]) -> str:
    parts = []
    for (backbone, shots), table in summarize_average(rows).items():
        columns = [*table["datasets"], AVERAGE]
        parts += [f"### {shots}-shot · {backbone} · test accuracy (%), mean over seeds; {AVERAGE} = mean over the "
                  f"{len(table['datasets'])} datasets", "",
                  "| method | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
        parts += [f"| {m} | " + " | ".join(f"{per[c]:.1f}" if c in per else "" for c in columns) + " |"
                  for m, per in table["methods"].items()]
        parts.append("")
    return "\n".join(parts)


def other_protocols(rows: list[dict]) -> list[str]:
    """The selection protocols other than crossgate's that rows hold, in SELECT_ON order."""
    held = {selected_on(r) for r in rows}
    return [p for p in SELECT_ON if p != DEFAULT_SELECT and p in held]


def selection_gap(rows: list[dict]) -> dict[tuple, dict[str, dict[int, dict]]]:
    """{(dataset, backbone): {method: {shots: {protocol: (mean under it, mean gain over few-shot-val, draws)}}}},
    each protocol paired with crossgate's draw by draw (the same images: same method, shots and seed)."""
    acc = {}
    for r in rows:
        if clean_row(r):
            acc[(r["dataset"], r["backbone"], r["method"], int(r["shots"]), r["seed"], selected_on(r))] = r["acc_test"]
    out: dict = defaultdict(lambda: defaultdict(dict))
    for (dataset, backbone, method, shots, seed, protocol), value in acc.items():
        if protocol == DEFAULT_SELECT or (dataset, backbone, method, shots, seed, DEFAULT_SELECT) not in acc:
            continue
        out[(dataset, backbone)][method].setdefault(shots, {}).setdefault(protocol, []).append(
            (value, value - acc[(dataset, backbone, method, shots, seed, DEFAULT_SELECT)]))
    return {group: {m: {k: {p: (float(np.mean([v for v, _ in pairs])), float(np.mean([d for _, d in pairs])),
                                len(pairs)) for p, pairs in sorted(per.items(), key=lambda kv: SELECT_ON.index(kv[0]))}
                        for k, per in sorted(by_shots.items())} for m, by_shots in methods.items()}
            for group, methods in out.items()}


def selection_gap_markdown(rows: list[dict]) -> str:
    parts = []
    for (dataset, backbone), by_method in selection_gap(rows).items():
        protocols = list(dict.fromkeys(p for per in by_method.values() for cells in per.values() for p in cells))
        header = " | ".join(f"{p} | Δ {p}" for p in protocols)
        parts += [f"### Selection gap · {dataset} · {backbone} · test accuracy (%), mean over the draws run "
                  f"under both (Δ: minus few-shot-val on the same draw)", "",
                  *(f"- {p}: {SELECT_LABELS[p]}" for p in protocols), "",
                  f"| method | shots | few-shot-val | {header} |", "|---|---:|---:|" + "---:|---:|" * len(protocols)]
        default = summarize(rows).get((dataset, backbone), {})
        for method, per in by_method.items():
            for shots, cells in per.items():
                base = default.get(method, {}).get(shots)
                row = [f"{cells[p][0]:.1f} | {cells[p][1]:+.1f}" if p in cells else " | " for p in protocols]
                parts.append(f"| {method} | {shots} | {base[0]:.1f} | " + " | ".join(row) + " |" if base else
                             f"| {method} | {shots} |  | " + " | ".join(row) + " |")
        parts.append("")
    return "\n".join(parts)


def summarize_base_to_new(rows: list[dict]) -> dict[tuple, dict[str, dict[int, dict[str, tuple]]]]:
    """{(dataset, backbone): {method: {shots: {"base"|"new"|"hm": (mean, std, n_seeds)}}}} of the base-to-new
    rows; hm is each draw's harmonic mean of base and new, then averaged (as CoCoOp's tables are not: they
    take the harmonic mean of the averages, given beside it)."""
    values: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    for r in rows:
        if base_to_new_row(r):
            cell = values[(r["dataset"], r["backbone"])][r["method"]][int(r["shots"])]
            cell["base"].append(r["acc_base"])
            cell["new"].append(r["acc_new"])
            cell["hm"].append(r["acc_test"])
    return {group: {m: {k: {part: (*mean_std(v), len(v)) for part, v in cell.items()}
                        for k, cell in sorted(by_shots.items())} for m, by_shots in methods.items()}
            for group, methods in values.items()}


def base_to_new_markdown(rows: list[dict]) -> str:
    tables = summarize_base_to_new(rows)
    if not tables:
        return ""
    from .methods import list_methods, new_class_methods  # torch and scikit-learn: only for such a table

    parts = []
    for (dataset, backbone), by_method in tables.items():
        n_base = next(r["n_base_classes"] for r in rows if base_to_new_row(r) and r["dataset"] == dataset)
        n_classes = next(r["n_classes"] for r in rows if base_to_new_row(r) and r["dataset"] == dataset)
        parts += [f"{dataset} · {backbone} · base-to-new: classes 1-{n_base} base, {n_base + 1}-{n_classes} new; "
                  "test accuracy (%) among each side's own classes, mean ± std over seeds", "",
                  "| method | shots | base | new | HM (per draw) | HM of the means |", "|---|---:|---:|---:|---:|---:|"]
        for method, per in by_method.items():
            for shots, cell in per.items():
                hm_of_means = harmonic_mean(cell["base"][0], cell["new"][0])
                parts.append(f"| {method} | {shots} | " + " | ".join(f"{cell[p][0]:.1f} ± {cell[p][1]:.1f}"
                                                                      for p in ("base", "new", "hm"))
                             + f" | {hm_of_means:.1f} |")
        parts += ["", "Not applicable (they cannot name classes they were not trained on): "
                  + ", ".join(m for m in list_methods() if m not in new_class_methods()) + ".", ""]
    return "\n".join(parts).rstrip("\n")


def summarize_shifts(rows: list[dict]) -> dict[tuple, dict[str, dict[str, tuple]]]:
    """{(dataset, backbone, shots): {method: {evaluation set: (mean, std, n_seeds)}}}: the dataset's own test
    split first, then each shift set, then "shift mean" (the mean over the shift sets of their seed means)."""
    shifted = {(r["dataset"], r["backbone"], int(r["shots"])) for r in rows if r.get("eval_set")}
    values: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        group = (r["dataset"], r["backbone"], int(r["shots"]))
        if group in shifted and r.get("corruption") is None:
            values[group][r["method"]][r.get("eval_set") or r["dataset"]].append(r["acc_test"])
    out = {}
    for group, methods in sorted(values.items()):
        out[group] = {}
        for method, per in methods.items():
            cells = {name: mean_std(v) + (len(v),) for name, v in sorted(per.items(), key=lambda kv: kv[0] != group[0])}
            sets = [name for name in cells if name != group[0]]
            if sets:
                cells["shift mean"] = (float(np.mean([cells[n][0] for n in sets])), 0.0, min(cells[n][2] for n in sets))
            out[group][method] = cells
    return out


def shift_markdown(rows: list[dict]) -> str:
    parts = []
    for (dataset, backbone, shots), by_method in summarize_shifts(rows).items():
        columns = list(dict.fromkeys(c for per in by_method.values() for c in per))
        parts += [f"### Shift sets · {dataset} · {backbone} · {shots}-shot · test accuracy (%), mean over seeds", "",
                  "| method | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
        parts += [f"| {m} | " + " | ".join(f"{per[c][0]:.1f}" if c in per else "" for c in columns) + " |"
                  for m, per in by_method.items()]
        parts.append("")
    return "\n".join(parts)


def condition(row: dict) -> str:
    return "clean" if row.get("corruption") is None else f"{row['corruption']}:{row['severity']}"


def summarize_robustness(rows: list[dict], metric: str = "acc_test") -> dict[tuple, dict[str, dict[str, tuple]]]:
    """{(dataset, backbone, shots): {method: {condition: (mean, std, n_seeds)}}} for groups with corrupted
    rows; conditions "clean", then "<corruption>:<severity>" in first-seen order. "clean" is the accuracy on
    the very test images that were corrupted (the rows' acc_clean: with --corrupt-per-class a subset), so
    every column of a row compares the same images."""
    values: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    clean: dict = {}  # (group, method, seed) -> accuracy on the corrupted images before corruption
    for r in rows:
        if r.get("corruption") is None or r.get("eval_set") is not None:
            continue
        group = (r["dataset"], r["backbone"], int(r["shots"]))
        if metric in r:
            values[group][r["method"]][condition(r)].append(r[metric])
        if metric == "acc_test" and "acc_clean" in r:
            clean[(group, r["method"], r["seed"], selected_on(r))] = r["acc_clean"]
    for (group, method, _, _), acc in clean.items():
        values[group][method]["clean"].append(acc)
    return {g: {m: {c: mean_std(v) + (len(v),) for c, v in sorted(per.items(), key=lambda kv: kv[0] != "clean")}
                for m, per in methods.items()} for g, methods in sorted(values.items())}


def robustness_markdown(rows: list[dict]) -> str:
    """Per (dataset, backbone, shots): test accuracy of every method under every corruption; for gate
    methods also how often the top-1 selected text moved (percent of test images)."""
    parts = []
    for metric, title in (("acc_test", "test accuracy (%)"),
                          ("gate_top1_shift", "gate: test images whose top-1 selected text changed (%)")):
        for (dataset, backbone, shots), by_method in summarize_robustness(rows, metric).items():
            conditions = list(dict.fromkeys(c for per in by_method.values() for c in per))
            if metric == "gate_top1_shift":
                conditions = [c for c in conditions if c != "clean"]
            if not conditions:
                continue
            parts += [f"### Robustness · {dataset} · {backbone} · {shots}-shot · {title}, mean over seeds", "",
                      "| method | " + " | ".join("clean (same images)" if c == "clean" else c for c in conditions)
                      + " |", "|---|" + "---:|" * len(conditions)]
            for method, per in by_method.items():
                parts.append(f"| {method} | " + " | ".join(f"{per[c][0]:.1f}" if c in per else ""
                                                           for c in conditions) + " |")
            parts.append("")
    return "\n".join(parts)


def summary_markdown(rows: list[dict], main_last: bool = False) -> str:
    """summary.md; `main_last`: the main tables at the end (for a terminal, where the last lines are read)."""
    parts = ["# crossgate results", "",
             "Test accuracy (%), mean ± sample std over seeds; hyperparameters chosen on the few-shot "
             "validation split.", ""]
    main = []
    for (dataset, backbone), by_method in summarize(rows).items():
        seeds = sorted({r["seed"] for r in rows if r["dataset"] == dataset and r["backbone"] == backbone})
        main += [f"## {dataset} · {backbone} · seeds {', '.join(map(str, seeds))}", "",
                 markdown_table(by_method), ""]
        if _gda_one_shot_is_zero_shot(rows, dataset, backbone):
            main += ["gda at 1 shot equals zeroshot by construction: one image per class gives no covariance, "
                     "so its discriminant adds nothing (`--aug-views` gives it samples).", ""]
    if not main_last:
        parts += main
    for protocol in other_protocols(rows):  # never mixed into the tables above
        for (dataset, backbone), by_method in summarize(rows, select_on=protocol).items():
            parts += [f"## {dataset} · {backbone} · hyperparameters {SELECT_LABELS[protocol]}", "",
                      markdown_table(by_method), ""]
    gap = selection_gap_markdown(rows)
    if gap:
        parts += ["## Selection gap", "", "What choosing elsewhere than on the few-shot validation split is worth, "
                  "draw by draw. Rows chosen on test saw test labels: they measure other papers' protocols and "
                  "are no result.", "", gap]
    average = average_markdown(rows)
    if average:
        parts += [f"## {AVERAGE} over datasets", "", "The papers' layout: per shot count, methods × datasets "
                  f"and their mean ({AVERAGE}, blank where a method lacks a dataset).", "", average]
    paired = paired_markdown(rows)
    if paired:
        parts += ["## Paired differences", "", paired]
    choices = base_choices_markdown(rows)
    if choices:
        parts += ["## gate-joint's base", "", choices]
    base_to_new = base_to_new_markdown(rows)
    if base_to_new:
        parts += ["## Base-to-new", "", base_to_new, ""]
    shifts = shift_markdown(rows)
    if shifts:
        parts += ["## Shift sets", "", "Models fitted on the dataset, scored on its shift sets without refitting; "
                  "-A and -R with the logits restricted to the 200 classes they hold.", "", shifts]
    robustness = robustness_markdown(rows)
    if robustness:
        parts += ["## Robustness", "", "Fitted heads scored on corrupted test images, or consulting corrupted "
                  "prompts (methods that read no text at prediction keep their clean accuracy there).", "",
                  robustness]
    if main_last:
        parts += ["", *main]
    return "\n".join(parts).rstrip("\n") + "\n"


def _gda_one_shot_is_zero_shot(rows: list[dict], dataset: str, backbone: str) -> bool:
    return any(main_row(r) and r["method"] == "gda" and r["shots"] == 1 and not r.get("aug_views_used")
               and r["dataset"] == dataset and r["backbone"] == backbone for r in rows)


def summary_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["dataset", "backbone", "method", "shots", "n_seeds", "acc_test_mean", "acc_test_std",
                     "compared_with", "condition"])
    for (dataset, backbone), by_method in summarize(rows).items():
        for method, per in by_method.items():
            for shots, (mean, std, n) in per.items():
                writer.writerow([dataset, backbone, method, shots, n, f"{mean:.4f}", f"{std:.4f}", "", "clean"])
    for (dataset, backbone), per_shots in paired_differences(rows).items():  # rows "<gated> - <best other>"
        for shots, d in per_shots.items():
            writer.writerow([dataset, backbone, f"{GATED} - {d['best_other']}", shots, len(d["diffs"]),
                             f"{d['mean']:.4f}", f"{d['std']:.4f}", d["best_other"], "clean"])
    for protocol in other_protocols(rows):  # the other selection protocols, marked in every row
        for (dataset, backbone), by_method in summarize(rows, select_on=protocol).items():
            for method, per in by_method.items():
                for shots, (mean, std, n) in per.items():
                    writer.writerow([dataset, backbone, method, shots, n, f"{mean:.4f}", f"{std:.4f}", "",
                                     f"select:{protocol}" + (" (saw test labels)" if protocol == "test" else "")])
    for (dataset, backbone), by_method in selection_gap(rows).items():
        for method, per in by_method.items():
            for shots, cells in per.items():
                for protocol, (_, gain, n) in cells.items():
                    writer.writerow([dataset, backbone, f"{method} gap", shots, n, f"{gain:.4f}", "", DEFAULT_SELECT,
                                     f"gap:{protocol}" + (" (saw test labels)" if protocol == "test" else "")])
    for (backbone, shots), table in summarize_average(rows).items():  # the mean over datasets
        for method, per in table["methods"].items():
            if AVERAGE in per:
                writer.writerow([AVERAGE, backbone, method, shots, "", f"{per[AVERAGE]:.4f}", "",
                                 "+".join(table["datasets"]), "clean"])
    for (dataset, backbone), by_method in summarize_base_to_new(rows).items():
        for method, per in by_method.items():
            for shots, cell in per.items():
                for part, (mean, std, n) in cell.items():
                    writer.writerow([dataset, backbone, method, shots, n, f"{mean:.4f}", f"{std:.4f}", "",
                                     f"base2new:{part}"])
    for (dataset, backbone, shots), by_method in summarize_shifts(rows).items():  # the shift table
        for method, per in by_method.items():
            for name, (mean, std, n) in per.items():
                if name != dataset:
                    writer.writerow([dataset, backbone, method, shots, n, f"{mean:.4f}", f"{std:.4f}", "",
                                     f"eval:{name}"])
    for (dataset, backbone, shots), by_method in summarize_robustness(rows).items():  # the robustness tables
        for method, per in by_method.items():
            for cond, (mean, std, n) in per.items():  # "clean": on the images that were corrupted
                writer.writerow([dataset, backbone, method, shots, n, f"{mean:.4f}", f"{std:.4f}", "",
                                 "clean:corrupted-images" if cond == "clean" else cond])
    return buf.getvalue()


def plot_file_name(dataset: str, backbone: str) -> str:
    """A readable name that always fits (long paths in a dataset name are cut and made unique by a digest)."""
    import hashlib

    exact = f"{dataset}__{backbone}"
    safe = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.") else "_" for ch in exact)
    # a name changed on the way ("my photos" and "my_photos" both give my_photos), or one that a case-blind
    # file system would fold into another, carries a digest of the exact names: one plot per dataset
    if safe != exact or safe != safe.lower() or len(safe) > 150:
        digest = hashlib.sha256(exact.encode("utf-8", "surrogateescape")).hexdigest()[:10]
        safe = safe[:120] + "__" + digest
    return f"{PLOT_PREFIX}{safe}.png"


PLOT_FORMATS = ("png", "pdf", "svg")  # a PNG to look at, vector files for a paper or a slide
_MARKERS = "osD^v<>pP*Xhd"
_LINES = ("-", "--", "-.", ":")
STRONGEST = 5  # methods beside gate-joint in the first panel: those with the best mean over shot counts
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")


def _draw(ax, lines, all_shots, zero_shot, chance):
    values = [v[0] - v[1] for per in lines.values() for v in per.values()] + \
        [v[0] + v[1] for per in lines.values() for v in per.values()]
    values = values or [y for y in (zero_shot, chance) if y is not None] or [0.0, 100.0]  # zero-shot alone
    low, high = min(values), max(values)
    pad = 0.06 * (high - low) + 1.0
    # the reference lines where they fall inside the panel's own range (each panel zooms on its lines)
    refs = [(y, label, style) for y, label, style in ((zero_shot, "zero-shot", (0, (5, 3))), (chance, "chance", ":"))
            if y is not None and low - pad <= y <= high + pad]
    for i, (method, per) in enumerate(lines.items()):
        shots = sorted(per)
        nudge = 2 ** (0.012 * (i - (len(lines) - 1) / 2))  # error bars side by side, still over their shot count
        ours = method == "gate-joint"
        ax.errorbar([k * nudge for k in shots], [per[k][0] for k in shots], yerr=[per[k][1] for k in shots],
                    marker=_MARKERS[i % len(_MARKERS)], linestyle=_LINES[i % len(_LINES)],
                    color="black" if ours else PALETTE[i % len(PALETTE)], markersize=6 if ours else 5,
                    linewidth=2.4 if ours else 1.4, capsize=2, elinewidth=0.8, label=method, zorder=3 if ours else 2)
    for y, label, style in refs:
        ax.axhline(y, color="0.4", linestyle=style, linewidth=1.0, label=f"{label} ({y:.1f})")
    ax.set_ylim(low - pad, high + pad)
    ax.set_xscale("log", base=2)
    ax.set_xticks(all_shots, [str(k) for k in all_shots])
    ax.minorticks_off()
    ax.set_xlabel("training images per class (shots)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=9, frameon=True, framealpha=0.85)
    if not refs and zero_shot is not None:  # said, though off this panel's scale
        ax.text(0.01, 0.01, f"zero-shot {zero_shot:.1f}" + (f", chance {chance:.1f}" if chance else "") + " (below)",
                transform=ax.transAxes, fontsize=8, color="0.35")


def plot_accuracy(by_method: dict[str, dict[int, tuple]], title: str, chance: float | None = None,
                  fmt: str = "png", paired: dict | None = None) -> bytes:
    """The figure of accuracy_figure, as `fmt` bytes (PNG, PDF or SVG)."""
    return plot_formats(by_method, title, chance, paired, (fmt,))[fmt]


def plot_formats(by_method: dict[str, dict[int, tuple]], title: str, chance: float | None = None,
                 paired: dict | None = None, formats: tuple = PLOT_FORMATS) -> dict[str, bytes]:
    """The figure of accuracy_figure, drawn once, as bytes per format."""
    import matplotlib.pyplot as plt

    fig = accuracy_figure(by_method, title, chance, paired)
    out = {}
    with warnings.catch_warnings(record=True) as caught:  # matplotlib warns once per glyph its font lacks
        warnings.simplefilter("always")
        fig.tight_layout()
        for fmt in formats:
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, metadata={"Date": None} if fmt == "svg" else None)
            out[fmt] = buf.getvalue()
    plt.close(fig)
    missing = sorted({m.group(1) for w in caught if (m := re.search(r"Glyph \d+ \((.*?)\) missing", str(w.message)))})
    if missing:  # once per plot, not per format
        logging.getLogger("crossgate").warning("the plot's font cannot draw %s in %r; they show as boxes",
                                               ", ".join(missing), title)
    return out


def accuracy_figure(by_method: dict[str, dict[int, tuple]], title: str, chance: float | None = None,
                    paired: dict | None = None):
    """Accuracy against shots in panels a slide can show: gate-joint with the strongest other methods, the
    rest of the methods, and (given `paired`, report.paired_differences of this dataset) gate-joint minus
    the best other method seed by seed, which is the claim. Every method has its own colour, marker and
    line style within a panel; error bars are the std over seeds; each panel zooms on its own lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = {m: per for m, per in by_method.items() if m != "zeroshot"}
    mean = {m: sum(v[0] for v in per.values()) / len(per) for m, per in methods.items()}
    others = sorted((m for m in methods if m != "gate-joint"), key=lambda m: -mean[m])
    first = (["gate-joint"] if "gate-joint" in methods else []) + others[:STRONGEST]
    rest = [m for m in methods if m not in first]
    panels = [("gate-joint and the strongest" if "gate-joint" in methods else "the strongest", first)]
    if rest:
        panels.append(("the other methods", rest))
    n = len(panels) + (1 if paired else 0)
    fig, axes = plt.subplots(1, n, figsize=(5.4 * n, 4.8), dpi=150, squeeze=False)
    axes = list(axes[0])
    all_shots = sorted({k for per in by_method.values() for k in per})
    zero_shot = (sum(v[0] for v in by_method["zeroshot"].values()) / len(by_method["zeroshot"])
                 if "zeroshot" in by_method else None)
    for ax, (name, names) in zip(axes, panels, strict=False):  # the last axes may be the paired panel
        _draw(ax, {m: methods[m] for m in names}, all_shots, zero_shot, chance)
        ax.set_title(name, fontsize=11)
    axes[0].set_ylabel("test accuracy (%)", fontsize=10)
    if paired:
        ax = axes[-1]
        shots = sorted(paired)
        for k in shots:
            d = paired[k]["diffs"]
            ax.scatter([k] * len(d), d, color="0.45", s=18, zorder=2, label="one seed" if k == shots[0] else None)
        ax.plot(shots, [paired[k]["mean"] for k in shots], color="black", marker="o", linewidth=2.2,
                label="mean over seeds", zorder=3)
        for k in shots:
            ax.annotate(paired[k]["best_other"], (k, paired[k]["mean"]), textcoords="offset points", xytext=(0, 8),
                        ha="center", fontsize=8, color="0.25")
        ax.axhline(0, color="0.35", linewidth=1.0)
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots, [str(k) for k in shots])
        ax.minorticks_off()
        ax.set_xlabel("training images per class (shots)", fontsize=10)
        ax.set_ylabel("gate-joint minus the best other (points)", fontsize=10)
        ax.set_title("gate-joint minus the best other method, same draws", fontsize=11)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=9, framealpha=0.85)
    fig.suptitle(title, fontsize=12)
    return fig


def chance_level(rows: list[dict]) -> float | None:
    """100 / classes: the classes a row names, else (rows of before) its training images / (shots x views)."""
    for r in rows:
        if r.get("n_classes"):
            return 100.0 / r["n_classes"]
    for r in rows:
        shots, views = r.get("shots"), len(r.get("train_views") or ["center"])
        if main_row(r) and isinstance(shots, int) and r.get("n_train"):
            return 100.0 * shots * views / r["n_train"]
    return None


REPORT_NAMES = ("summary.md", "summary.csv")
PLOT_PREFIX = "accuracy_vs_shots__"
AVERAGE_PLOT = "average-over-datasets"  # the average plot's name part, where a dataset's name would be


def report_files(out: Path) -> list[str]:
    """The names of the report files in `out` now: what a rebuild may overwrite."""
    out = Path(out)
    plots = sorted(p.name for p in out.glob(f"{PLOT_PREFIX}*") if p.suffix[1:] in PLOT_FORMATS) if out.is_dir() else []
    return [*REPORT_NAMES, *plots]


def write_reports(out: Path, rows: list[dict] | None = None) -> list[Path]:
    """summary.md, summary.csv and one plot per (dataset, backbone) in `out` (PNG, PDF and SVG), from
    results.jsonl. A file of those names that crossgate did not write there is refused before any is written."""
    out = OutputFolder(out)
    rows = read_rows(out.path / "results.jsonl") if rows is None else rows
    files = {"summary.md": summary_markdown(rows).encode(), "summary.csv": summary_csv(rows).encode()}
    paired = paired_differences(rows)
    for (dataset, backbone), by_method in summarize(rows).items():
        mine = [r for r in rows if r["dataset"] == dataset and r["backbone"] == backbone]
        seeds = ",".join(str(s) for s in sorted({r["seed"] for r in mine}))
        title = f"{dataset} · {backbone} · mean ± std over seeds {seeds}"
        for fmt, data in plot_formats(by_method, title, chance_level(mine), paired.get((dataset, backbone))).items():
            files[plot_file_name(dataset, backbone).replace(".png", f".{fmt}")] = data
    for protocol in other_protocols(rows):  # their own plots, titled with what they saw
        for (dataset, backbone), by_method in summarize(rows, select_on=protocol).items():
            mine = [r for r in rows if r["dataset"] == dataset and r["backbone"] == backbone]
            title = f"{dataset} · {backbone} · {SELECT_LABELS[protocol]}"
            for fmt, data in plot_formats(by_method, title, chance_level(mine)).items():
                files[plot_file_name(dataset, f"{backbone}__select-{protocol}").replace(".png", f".{fmt}")] = data
    averages: dict = defaultdict(lambda: defaultdict(dict))  # backbone -> method -> shots -> (mean, 0, n)
    datasets_of = {}
    for (backbone, shots), table in summarize_average(rows).items():
        datasets_of[backbone] = table["datasets"]
        for method, per in table["methods"].items():
            if AVERAGE in per:
                averages[backbone][method][shots] = (per[AVERAGE], 0.0, len(table["datasets"]))
    for backbone, by_method in averages.items():
        title = f"{AVERAGE} over {len(datasets_of[backbone])} datasets · {backbone} (mean of the seed means)"
        for fmt, data in plot_formats(by_method, title).items():
            files[plot_file_name(AVERAGE_PLOT, backbone).replace(".png", f".{fmt}")] = data
    return out.write_all(files)
