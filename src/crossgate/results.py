"""results.jsonl: one JSON object per run, appended durably; a half-written last line is ignored."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import UserError
from .jsonio import BadJSON, parse_json
from .storage import atomic_write_bytes, write_error

RUN_KEY = ("dataset", "backbone", "method", "shots", "seed")
# where hyperparameters and checkpoints are chosen: crossgate's protocol, or (to measure other papers'
# protocols) the whole validation split or the test split; rows of before were all few-shot-val
SELECT_ON = ("few-shot-val", "full-val", "test")
DEFAULT_SELECT = SELECT_ON[0]
SELECT_LABELS = {"few-shot-val": "chosen on the few-shot validation split",
                 "full-val": "chosen on the whole validation split",
                 "test": "CHOSEN ON THE TEST SPLIT: these numbers saw test labels"}


def selected_on(row: dict) -> str:
    return row.get("select_on", DEFAULT_SELECT)


def run_key(row: dict) -> tuple:
    """What a row is a result of; corruption, severity and eval_set are None for the clean test set (eval_set:
    the shift set a model fitted on the dataset was scored on)."""
    return tuple(row[k] for k in RUN_KEY) + (row.get("corruption"), row.get("severity"), row.get("eval_set"),
                                             selected_on(row))


def harmonic_mean(a: float, b: float) -> float:
    """Of base and new accuracy (base-to-new); 0 when both are 0."""
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def clean_row(row: dict) -> bool:
    """A few-shot row of the dataset's own clean test split (not a corrupted copy, not a shift set, not
    base-to-new, whose rows have a table of their own), any selection protocol."""
    return row.get("corruption") is None and row.get("eval_set") is None and not base_to_new_row(row)


def base_to_new_row(row: dict) -> bool:
    return row.get("protocol") == "base2new"


def main_row(row: dict) -> bool:
    """A clean row chosen by crossgate's protocol (rows of the other selection protocols have tables of
    their own)."""
    return clean_row(row) and selected_on(row) == DEFAULT_SELECT


def read_rows(path: Path) -> list[dict]:
    """Every complete row; a last line cut short by a crash is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows, bad = [], []
    lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = parse_json(line)
        except BadJSON:
            if number < len(lines):  # the last line may be cut short by a crash: repair() drops it
                bad.append(number)
            continue
        if valid_row(row):
            rows.append(row)
        else:
            bad.append(number)
    if bad:
        import logging

        logging.getLogger("crossgate").warning("%s: ignored %d malformed line(s) (%s); they are not results of "
                                               "crossgate", path, len(bad), ", ".join(map(str, bad[:10])))
    return rows


def _number(value, low: float = 0.0, high: float = 100.0) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high


def _count(value, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


# the fields report and resume read, and what each must be; a field absent from a row is fine unless required
_ROW_FIELDS = {
    "dataset": lambda v: isinstance(v, str), "backbone": lambda v: isinstance(v, str),
    "method": lambda v: isinstance(v, str), "shots": lambda v: _count(v, 1), "seed": lambda v: _count(v),
    "acc_test": _number, "acc_clean": _number, "gate_top1_shift": _number, "gate_top1_true_class": _number,
    "n_train": lambda v: _count(v, 1), "n_classes": lambda v: _count(v, 1),
    "corruption": lambda v: v is None or isinstance(v, str), "severity": lambda v: v is None or _count(v, 1),
    "train_views": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "eval_set": lambda v: v is None or isinstance(v, str),
    "select_on": lambda v: v in SELECT_ON,
    "aug_views": lambda v: _count(v), "aug_views_used": lambda v: _count(v),
    "protocol": lambda v: v in ("few-shot", "base2new"), "acc_base": _number, "acc_new": _number,
}
_REQUIRED = ("dataset", "backbone", "method", "shots", "seed", "acc_test")


def valid_row(row) -> bool:
    """A row crossgate's bench could have written: its key fields, an accuracy, and every field that report
    reads of the right type (bench writes integer shots; `train`'s "all" never goes into results.jsonl)."""
    if not isinstance(row, dict) or not all(k in row for k in _REQUIRED):
        return False
    return all(check(row[k]) for k, check in _ROW_FIELDS.items() if k in row)


def repair(path: Path) -> None:
    """Drop a half-written last line so that the next append starts on a line of its own."""
    path = Path(path)
    if path.is_file():
        data = path.read_bytes()  # bytes: a line that is not UTF-8 is read_rows' to skip, not a crash here
        if data and not data.endswith(b"\n"):
            atomic_write_bytes(path, data[: data.rfind(b"\n") + 1])


def dumps_row(row: dict) -> str:
    """A row as strict JSON: a NaN or infinity (never valid JSON) is a bug to report, not a value to write."""
    try:
        return json.dumps(row, sort_keys=True, allow_nan=False)
    except ValueError:
        bad = [k for k, v in row.items() if isinstance(v, float) and v != v or v in (float("inf"), float("-inf"))]
        raise UserError(f"a result of {row.get('method')} is not a number ({', '.join(bad) or 'a field'}); "
                        "nothing was written for it") from None


def append_row(path: Path, row: dict) -> None:
    """One line, flushed to disk; a write cut short (full disk, kill -9) is dropped by the next repair()."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(dumps_row(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:  # the advice fits the cause: space for a full disk, another place for the rest
        raise UserError(f"{write_error(path, err)} (finished runs are kept)") from None
