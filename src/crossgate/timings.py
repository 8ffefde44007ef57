"""What this machine measured: images encoded per second per encoder, and seconds per fit per (method,
shots), kept in CACHE_DIR/timings.json so that the next plan's estimate is this machine's, not a constant.

Each record is a running mean over the runs that measured it, keyed by the machine (host name and core
count: a cache shared by two machines keeps each one's), written atomically; a file that is not a JSON
object is not crossgate's to replace: it is ignored and left as it is.
"""
from __future__ import annotations

import contextlib
import json
import math
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
    "overhead": factor of fit seconds that scoring and processes add, "rest": seconds of a run outside
    encoding and fitting (start-up, loading, reports)}; {} when none."""
    mine = (_read(Path(cache_dir) / FILE) or {}).get(machine())
    if not isinstance(mine, dict):
        return {}
    # only what crossgate could have written: a number that is not one is left out, not trusted
    out = {kind: {k: v for k, v in table.items() if _seconds(v, positive=True)}
           for kind in ("encode", "fit") if isinstance(table := mine.get(kind), dict)}
    out.update({key: mine[key] for key, positive in (("overhead", True), ("rest", False))
                if _seconds(mine.get(key), positive)})
    return out


def _seconds(value, positive: bool) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and (value > 0 if positive else value >= 0)


def _running_mean(old, new: float) -> float:
    return new if not isinstance(old, (int, float)) else (1 - WEIGHT) * old + WEIGHT * new


def record(cache_dir: Path, encode: dict | None = None, fit: dict | None = None,
           overhead: float | None = None, rest: float | None = None) -> None:
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
    for key, new in (("overhead", overhead), ("rest", rest)):
        if new is not None:
            mine[key] = _running_mean(mine.get(key), new)
    # a cache that cannot be written (the writer says so as a UserError): an estimate is not worth failing for
    with contextlib.suppress(OSError, UserError):
        atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode())
