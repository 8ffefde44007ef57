"""results.jsonl: one JSON object per run, appended durably; a half-written last line is ignored."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import UserError
from .storage import atomic_write_bytes

RUN_KEY = ("dataset", "backbone", "method", "shots", "seed")


def run_key(row: dict) -> tuple:
    """What a row is a result of; corruption and severity are None for the clean test set."""
    return tuple(row[k] for k in RUN_KEY) + (row.get("corruption"), row.get("severity"))


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
            row = json.loads(line)
        except json.JSONDecodeError:
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


def valid_row(row) -> bool:
    """A row crossgate could have written: its key fields, an accuracy, and the right types."""
    if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("dataset", "backbone", "method")):
        return False
    if not isinstance(row.get("seed"), int) or isinstance(row.get("seed"), bool):
        return False
    if not (isinstance(row.get("shots"), int) and not isinstance(row["shots"], bool)) and row.get("shots") != "all":
        return False
    acc = row.get("acc_test")
    return isinstance(acc, (int, float)) and not isinstance(acc, bool) and 0 <= acc <= 100


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
    except OSError as err:
        raise UserError(f"cannot append to {path} ({err.strerror or err}); free some space and run again: "
                        "finished runs are kept") from None
