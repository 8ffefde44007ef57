"""The one JSON reader for every file crossgate reads (results rows, cache manifests, model.json, split and
index files): bounded in size, and hostile content (nesting 100,000 deep, a 5,001-digit number, a NaN, a
byte-order mark, bytes that are not UTF-8) is a BadJSON naming the problem, never a RecursionError or a
traceback. Imports nothing from crossgate but errors."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError

MAX_BYTES = 256 << 20  # more than any file crossgate writes (a CoOp split file of ImageNet is ~100 MB)


class BadJSON(UserError):
    """A file or line that is not JSON crossgate can read; the message says why."""


def _constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def parse_json(data: bytes | str):
    """The value of one JSON text (bytes are UTF-8, a leading byte-order mark allowed)."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise BadJSON(f"not UTF-8 text (byte {err.start})") from None
    data = data.removeprefix("\ufeff")
    try:
        return json.loads(data, parse_constant=_constant)
    except RecursionError:
        raise BadJSON("nested too deeply") from None
    except ValueError as err:  # JSONDecodeError, and int()'s limit on digits ("Exceeds the limit ...")
        raise BadJSON(" ".join(str(err).split())[:200]) from None


def read_json(path: Path, max_bytes: int = MAX_BYTES):
    """The value of a JSON file; an unreadable, oversized or malformed one is a BadJSON (OSError for a
    missing file stays an OSError, for the caller to word)."""
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise BadJSON(f"larger than {max_bytes >> 20} MiB")
    return parse_json(data)
