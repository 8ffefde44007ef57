"""What this machine measured: images encoded per second per encoder, and seconds per fit per (method,
shots), kept in CACHE_DIR/timings.json so that the next plan's estimate is this machine's, not a constant.

Each record is a running mean over the runs that measured it, keyed by the machine (host name and core
count: a cache shared by two machines keeps each one's), written atomically; a file that does not parse is
ignored and replaced.
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

FILE = "timings.json"
WEIGHT = 0.5  # of a new measurement in the running mean: recent runs count most


def machine() -> str:
    return f"{platform.node() or 'host'}/{os.cpu_count() or 1}cores"


def load(cache_dir: Path) -> dict:
    """This machine's records: {"encode": {encoder identity: img/s}, "fit": {"method/shots": s},
    "overhead": factor of fit seconds that scoring and processes add}; {} when none."""
    try:
        data = json.loads((Path(cache_dir) / FILE).read_text())
    except (OSError, ValueError):
        return {}
    mine = data.get(machine()) if isinstance(data, dict) else None
    return mine if isinstance(mine, dict) else {}


def _running_mean(old, new: float) -> float:
    return new if not isinstance(old, (int, float)) else (1 - WEIGHT) * old + WEIGHT * new


def record(cache_dir: Path, encode: dict | None = None, fit: dict | None = None,
           overhead: float | None = None) -> None:
    """Fold new measurements into this machine's records (encode: identity -> img/s; fit: "method/shots" ->
    seconds); nothing is lost to a crash (atomic write), and a cache that cannot be written is skipped."""
    from .storage import atomic_write_bytes

    path = Path(cache_dir) / FILE
    try:
        data = json.loads(path.read_text())
        data = data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        data = {}
    mine = data.setdefault(machine(), {})
    for kind, new in (("encode", encode or {}), ("fit", fit or {})):
        table = mine.setdefault(kind, {})
        for key, value in new.items():
            table[key] = _running_mean(table.get(key), value)
    if overhead is not None:
        mine["overhead"] = _running_mean(mine.get("overhead"), overhead)
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode())
    except OSError:
        pass  # an estimate is not worth failing a run for
