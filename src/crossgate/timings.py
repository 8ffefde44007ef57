"""What this machine measured: images encoded per second per encoder, and seconds per fit per (method,
shots), kept in CACHE_DIR/timings.json so that the next plan's estimate is this machine's, not a constant.

Each record is a running mean over the runs that measured it, keyed by the machine (host name and core
count: a cache shared by two machines keeps each one's), written atomically; a file that is not a JSON
object is not crossgate's to replace: it is ignored and left as it is.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
from pathlib import Path

from .jsonio import BadJSON, read_json

FILE = "timings.json"
WEIGHT = 0.5  # of a new measurement in the running mean: recent runs count most


def machine() -> str:
    return f"{platform.node() or 'host'}/{os.cpu_count() or 1}cores"


def _read(path: Path) -> dict | None:
    """The file's records of every machine: {} where there is no file, None where it is not a JSON object."""
    try:
        data = read_json(path)
    except FileNotFoundError:
        return {}
    except (OSError, BadJSON):
        return None
    return data if isinstance(data, dict) else None


def load(cache_dir: Path) -> dict:
    """This machine's records: {"encode": {encoder identity: img/s}, "fit": {"method/shots": s},
    "overhead": factor of fit seconds that scoring and processes add}; {} when none."""
    mine = (_read(Path(cache_dir) / FILE) or {}).get(machine())
    return mine if isinstance(mine, dict) else {}


def _running_mean(old, new: float) -> float:
    return new if not isinstance(old, (int, float)) else (1 - WEIGHT) * old + WEIGHT * new


def record(cache_dir: Path, encode: dict | None = None, fit: dict | None = None,
           overhead: float | None = None) -> None:
    """Fold new measurements into this machine's records (encode: identity -> img/s; fit: "method/shots" ->
    seconds); nothing is lost to a crash (atomic write), and a cache that cannot be written is skipped."""
    from .errors import UserError
    from .storage import atomic_write_bytes

    path = Path(cache_dir) / FILE
    data = _read(path)
    if data is None:  # somebody else's file: left alone, and nothing recorded
        return
    mine = data.setdefault(machine(), {})
    for kind, new in (("encode", encode or {}), ("fit", fit or {})):
        table = mine.setdefault(kind, {})
        for key, value in new.items():
            table[key] = _running_mean(table.get(key), value)
    if overhead is not None:
        mine["overhead"] = _running_mean(mine.get("overhead"), overhead)
    # a cache that cannot be written (the writer says so as a UserError): an estimate is not worth failing for
    with contextlib.suppress(OSError, UserError):
        atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode())
