"""Atomic, checksummed storage of named float arrays: safetensors + a JSON manifest.

An entry is `<stem>.safetensors` plus `<stem>.json`. Both are written to a temporary file and renamed
into place, the manifest last; the manifest carries the sha256 of the tensor file. An entry without a
manifest, or whose checksum does not match, is not valid, so an interrupted write is never read back.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from .errors import UserError
from .jsonio import BadJSON, read_json


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _umask_mode() -> int:
    """The mode a plain open() would give a new file (mkstemp's 0600 would hide shared caches and models)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def _replaced_atomically(path: Path, durable: bool = True):
    """Yields a temporary file beside `path`; when the block ends, it becomes `path` (umask mode), flushed
    to the disk first if `durable`. On any error it is removed, and an OSError (full disk, read-only
    folder) becomes a one-line UserError."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise write_error(path, err) from None
    os.close(fd)
    try:
        yield Path(tmp)
        if durable:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except (OSError, SafetensorError) as err:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, _as_os_error(err)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _as_os_error(err: Exception) -> OSError:
    """safetensors reports a failed write as SafetensorError("... IoError(Os { code: 28, ... message: "No space
    left on device" })"): the OSError it wraps, so that it is worded like any other write error."""
    import re

    if isinstance(err, OSError):
        return err
    text = str(err)
    code = re.search(r"code: (\d+)", text)
    message = re.search(r'message: "([^"]*)"', text)
    return OSError(int(code.group(1)) if code else 0, message.group(1) if message else " ".join(text.split()))


def write_error(path: Path, err: OSError) -> UserError:
    import errno

    advice = {errno.ENOSPC: "free some space and run again", errno.EDQUOT: "free some space and run again",
              errno.ENAMETOOLONG: "use a shorter path",
              errno.EISDIR: "a folder stands where that file goes: move it away",
              errno.ELOOP: "a link loop stands where that file goes: remove it"}.get(
        err.errno, "write somewhere writable instead (--out, --cache-dir or another folder)")
    return UserError(f"cannot write {path} ({err.strerror or err}); {advice}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with _replaced_atomically(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _write_manifest(stem: Path, meta: dict, checksum: str, tensors: dict[str, tuple[list, str]],
                    durable: bool = True) -> None:
    """The manifest goes last: an entry whose manifest is missing or disagrees with its tensors is a miss."""
    manifest = dict(meta)
    manifest["sha256"] = checksum
    manifest["tensors"] = {k: {"shape": list(shape), "dtype": dtype} for k, (shape, dtype) in tensors.items()}
    with _replaced_atomically(stem.with_name(stem.name + ".json"), durable) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")


def save_arrays(stem: Path, arrays: dict[str, np.ndarray], meta: dict, durable: bool = True) -> None:
    """Write `arrays` and `meta` as one entry at `stem` (no suffix). `durable=False` skips the fsyncs, for
    entries whose loss to a power cut only costs a recomputation (the checksum catches a torn write)."""
    stem = Path(stem)
    with _replaced_atomically(stem.with_name(stem.name + ".safetensors"), durable) as tmp:
        save_file({k: np.asarray(v, order="C") for k, v in arrays.items()}, str(tmp))  # keeps 0-d arrays 0-d
        checksum = sha256_file(tmp)
    _write_manifest(stem, meta, checksum, {k: (v.shape, str(v.dtype)) for k, v in arrays.items()}, durable)


_SAFETENSORS_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}


def save_streamed(stem: Path, name: str, parts, shape: tuple[int, int], small: dict[str, np.ndarray],
                  meta: dict) -> None:
    """Like save_arrays, for one large float32 tensor given as row blocks (`parts`, an iterable of
    (rows, shape[1]) arrays) and a few small arrays: written to disk as they come, never held whole."""
    stem = Path(stem)
    dtypes = {name: np.dtype(np.float32), **{k: v.dtype for k, v in small.items()}}
    shapes = {name: list(shape), **{k: list(v.shape) for k, v in small.items()}}
    specs, offset = {}, 0
    for key in dtypes:
        size = int(np.prod(shapes[key])) * dtypes[key].itemsize
        specs[key] = {"dtype": _SAFETENSORS_DTYPES[dtypes[key]], "shape": shapes[key],
                      "data_offsets": [offset, offset + size]}
        offset += size
    header = json.dumps(specs, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # safetensors aligns the data to 8 bytes
    digest = hashlib.sha256()
    with _replaced_atomically(stem.with_name(stem.name + ".safetensors")) as tmp, open(tmp, "wb") as f:
        def write(data: bytes):
            f.write(data)
            digest.update(data)

        write(len(header).to_bytes(8, "little") + header)
        rows = 0
        for block in parts:
            block = np.asarray(block, dtype=np.float32, order="C")
            if block.ndim != 2 or block.shape[1] != shape[1]:
                raise ValueError(f"block of shape {block.shape} does not fit {shape}")
            rows += len(block)
            write(block.tobytes())
        if rows != shape[0]:
            raise ValueError(f"got {rows} rows, expected {shape[0]}")
        for value in small.values():
            write(np.asarray(value, order="C").tobytes())
    _write_manifest(stem, meta, digest.hexdigest(), {k: (shapes[k], str(dtypes[k])) for k in dtypes})


def load_arrays(stem: Path) -> tuple[dict[str, np.ndarray], dict] | None:
    """The entry at `stem`, or None when it is absent, incomplete or fails its checksum."""
    stem = Path(stem)
    manifest_path = stem.with_name(stem.name + ".json")
    tensor_path = stem.with_name(stem.name + ".safetensors")
    if not manifest_path.is_file() or not tensor_path.is_file():
        return None
    try:
        manifest = read_json(manifest_path, max_bytes=16 << 20)
    except (OSError, BadJSON):
        return None
    if not isinstance(manifest, dict) or manifest.get("sha256") != sha256_file(tensor_path):
        return None  # valid JSON of another shape (null, a list) is as good as no manifest
    try:
        arrays = load_file(str(tensor_path))
    except Exception:  # a corrupt file that still matched is not expected; treat as a miss
        return None
    tensors = manifest.get("tensors", {})
    if not isinstance(tensors, dict):
        return None
    for name, spec in tensors.items():
        if name not in arrays or not isinstance(spec, dict) or list(arrays[name].shape) != spec.get("shape"):
            return None
    return arrays, manifest


def ensure_writable_dir(path: Path, what: str, flag: str) -> Path:
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-"):
            pass
    except OSError as err:
        raise UserError(f"{what} {path} is not writable ({err.strerror}); choose another with {flag}") from err
    return path


def lock_file(path: Path, owner_is_crossgate: bool = False):
    """A FileLock on `path`, which must be a regular file or absent. A folder or a link there is not a lock
    crossgate made: in a folder crossgate owns (the cache) it is moved out of the way, elsewhere (a results
    folder) it is refused in one line rather than followed."""
    import shutil

    from filelock import FileLock

    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        if not owner_is_crossgate:
            kind = "a link" if path.is_symlink() else "a folder" if path.is_dir() else "not a regular file"
            raise UserError(f"{path} is {kind}, not the lock file crossgate makes there; remove it and run again")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return FileLock(path)


LEDGER = ".crossgate-written.json"  # in a results folder: name -> sha256 of each file crossgate wrote there


class OutputFolder:
    """A folder of the user's choosing that crossgate writes named files into (a results folder). A file
    already there is overwritten only when crossgate can tell that it wrote it: the folder's ledger holds
    the sha256 of every file crossgate wrote, and the file still has that content. A name alone proves
    nothing: the user's own summary.md, or one edited since, is refused in one line before any work."""

    def __init__(self, path: Path):
        self.path = Path(path).expanduser()

    def _ledger(self) -> dict:
        try:
            ledger = read_json(self.path / LEDGER, max_bytes=1 << 20)
        except (OSError, BadJSON):
            return {}
        return ledger if isinstance(ledger, dict) else {}

    def check(self, names, flag: str = "--out") -> None:
        """Every file of `names` that exists is a regular file crossgate wrote and nobody changed since."""
        ledger = None
        for name in names:
            target = self.path / name
            if not (target.exists() or target.is_symlink()):
                continue
            if target.is_symlink() or not target.is_file():
                kind = "a link" if target.is_symlink() else "a folder" if target.is_dir() else "not a regular file"
                raise UserError(f"{target} is {kind}, where crossgate writes its {name}; move it away or choose "
                                f"another {flag}")
            ledger = self._ledger() if ledger is None else ledger
            if ledger.get(name) != sha256_file(target):
                raise UserError(f"{target} was not written by crossgate, or was changed since, and crossgate would "
                                f"overwrite it; move it away or choose another {flag}")

    def write_all(self, files: dict[str, bytes]) -> list[Path]:
        """Write every file (name -> content) atomically, all checked first, and record them in the ledger once."""
        self.check(files)
        ledger = self._ledger()
        for name, data in files.items():
            atomic_write_bytes(self.path / name, data)
            ledger[name] = hashlib.sha256(data).hexdigest()
        atomic_write_text(self.path / LEDGER, json.dumps(ledger, indent=1, sort_keys=True))
        return [self.path / name for name in files]
