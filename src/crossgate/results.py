"""results.jsonl: one JSON object per run, appended durably; a half-written last line is ignored."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import UserError
from .storage import atomic_write_text

RUN_KEY = ("dataset", "backbone", "method", "shots", "seed")


def run_key(row: dict) -> tuple:
    """What a row is a result of; corruption and severity are None for the clean test set."""
    return tuple(row[k] for k in RUN_KEY) + (row.get("corruption"), row.get("severity"))


def read_rows(path: Path) -> list[dict]:
    """Every complete row; a last line cut short by a crash is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def repair(path: Path) -> None:
    """Drop a half-written last line so that the next append starts on a line of its own."""
    path = Path(path)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):
            atomic_write_text(path, text[: text.rfind("\n") + 1])


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
