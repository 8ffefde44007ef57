"""What the method flags of `bench`, `demo`, `train` and `explain` are, without importing the methods.

Building those parsers from the registry imports every method, so torch and scikit-learn (5-6 s on two
cores) only to print --help. The table (method names, then per flag prefix the methods it configures and
each field's help and default) is kept in CACHE_DIR/flags/<digest>.json, the digest taken over crossgate's
version and the sources that define it (methods/, config.py, registry.py): a new or edited method file
is a new digest, so a stale table is never read. The first parser that imports the registry writes it;
a file already at its path is never replaced (a malformed one is not crossgate's: the table is then built
each time).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from . import __version__
from .jsonio import BadJSON, read_json

PACKAGE = Path(__file__).resolve().parent
SOURCES = ("config.py", "registry.py")


@functools.cache  # the sources do not change under a running process
def source_digest() -> str:
    h = hashlib.sha256(__version__.encode())
    for path in [*(PACKAGE / s for s in SOURCES), *sorted((PACKAGE / "methods").glob("*.py"))]:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _path(cache_dir: Path) -> Path:
    return Path(cache_dir).expanduser() / "flags" / f"{source_digest()}.json"


def _valid(table) -> bool:
    try:
        return (isinstance(table["methods"], list) and all(isinstance(m, str) for m in table["methods"])
                and all(isinstance(g["prefix"], str) and all(isinstance(m, str) for m in g["methods"])
                        and all(len(f) == 3 and all(isinstance(v, str) for v in f) for f in g["fields"])
                        for g in table["groups"]))
    except (KeyError, TypeError):
        return False


def load(cache_dir: Path) -> dict | None:
    """The table of these sources, or None where none was written (or it cannot be read, or is malformed)."""
    try:
        table = read_json(_path(cache_dir))
    except (OSError, BadJSON):
        return None
    return table if _valid(table) else None


def save(cache_dir: Path, table: dict) -> None:
    """Atomically, where no file is there yet; silently not where the cache cannot be written (the table is
    only a shortcut)."""
    from .errors import UserError
    from .storage import atomic_write_text

    path = _path(cache_dir)
    if os.path.lexists(path):
        return
    with contextlib.suppress(OSError, UserError):
        atomic_write_text(path, json.dumps(table, indent=1))


def table_for(cache_dir: Path, build: Callable[[], dict]) -> dict:
    """The saved table, else `build()` (which imports the methods), saved for the next parser."""
    table = load(cache_dir)
    if table is None:
        table = build()
        save(cache_dir, table)
    return table
