"""Downloads on first use: resumable, checksummed, atomic, and archives extracted without path traversal.

What to fetch for each dataset is data (data/downloads.json). A file is downloaded to `<path>.part`
(resumed with an HTTP Range request when a previous attempt left one), verified, then renamed into
place; an archive is extracted into a temporary folder beside its target and moved in only when complete.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath

from ..errors import UserError
from ..progress import progress as progress_bar

CHUNK = 1 << 20


@dataclass(frozen=True)
class Remote:
    url: str
    path: str  # under the data root
    md5: str | None = None
    sha256: str | None = None  # neither: the publisher gives no checksum; the reader validates the content
    git_blob: str | None = None  # git's blob id of the content (a file too large for the copy we could read)
    no_checksum: str | None = None  # why no checksum is pinned; the content is checked by extracting and reading it
    extract_to: str | None = None  # an archive (tar or zip): extract into this folder under the data root
    extract_from: str | None = None  # take only this folder of the archive (its contents go into extract_to)
    nested: tuple[str, ...] = field(default=())  # archives inside the extracted tree: extracted where they lie
    provides: str | None = None  # what must exist under the data root once done (default: path)
    role: str = "split"  # "split": needed to open the dataset; "images": needed to compute features

    def target(self, root: Path) -> Path:
        return root / (self.provides or self.path)


def _table() -> dict:
    return json.loads(resources.files("crossgate").joinpath("data/downloads.json").read_text())


def remotes(dataset: str) -> tuple[list[Remote], list[Remote]]:
    """(required files, published few-shot index files) of a dataset; empty when it has none listed."""
    entry = _table().get(dataset, {"files": [], "indices": {}})
    indices = [Remote(url=v["url"], path=f"indices/{dataset}/{name}", sha256=v.get("sha256"),
                      git_blob=v.get("git_blob")) for name, v in entry["indices"].items()]
    return [Remote(**{**f, "nested": tuple(f.get("nested", ()))}) for f in entry["files"]], indices


def prompt_remote(dataset: str) -> Remote | None:
    """The CuPL description bank published for `dataset` (downloads.json, "cupl"), if there is one."""
    entry = _table().get(dataset, {}).get("cupl")
    return Remote(**entry) if entry else None


def availability(dataset: str) -> str:
    """What first use of `dataset` fetches: 'downloads' (images and splits), 'split downloads' (the split
    and index files; you supply the images), 'index downloads' (Lin et al.'s few-shot index files only) or
    'local' (nothing: embedded, or supplied by you)."""
    files, indices = remotes(dataset)
    if any(f.extract_to is not None for f in files):
        return "downloads"
    return "split downloads" if files else "index downloads" if indices else "local"


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def git_blob_id(path: Path) -> str:
    """What `git hash-object` prints: sha1 of "blob <size>\\0" and the content."""
    h = hashlib.sha1(f"blob {Path(path).stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, remote: Remote) -> bool:
    if remote.sha256:
        return _digest(path, "sha256") == remote.sha256
    if remote.git_blob:
        return git_blob_id(path) == remote.git_blob
    if remote.md5:
        return _digest(path, "md5") == remote.md5
    return True


def download(remote: Remote, dest: Path, progress: bool = True) -> Path:
    """Fetch `remote.url` to `dest`, resuming `dest.part`; a checksum mismatch deletes the part file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(remote.url, headers={"User-Agent": "crossgate"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the part file is already complete
            response = None
        else:
            raise _unreachable(remote, dest, f"HTTP {err.code}") from None
    except (urllib.error.URLError, OSError) as err:
        raise _unreachable(remote, dest, str(getattr(err, "reason", err))) from None
    if response is not None:
        with response:
            resumed = have and response.status == 206
            total = response.length + (have if resumed else 0) if response.length is not None else None
            with open(part, "ab" if resumed else "wb") as f, \
                    progress_bar(total=total, initial=have if resumed else 0, unit="B", unit_scale=True,
                                 desc=dest.name, enabled=progress) as bar:
                try:
                    while block := response.read(CHUNK):
                        f.write(block)
                        bar.update(len(block))
                except OSError as err:
                    raise UserError(f"download of {remote.url} broke off ({err}); run again to resume "
                                    f"from {part}") from None
    if not verify(part, remote):
        part.unlink()
        raise UserError(f"{remote.url} does not match its published checksum (deleted the download); run again, "
                        f"or put a verified copy at {dest}")
    part.replace(dest)
    return dest


def _unreachable(remote: Remote, dest: Path, reason: str) -> UserError:
    return UserError(f"cannot download {remote.url} ({reason}); offline? put that file at {dest} yourself "
                     "(or point --data-root / CROSSGATE_DATA at a folder that has it)")


def safe_extract(archive: Path, into: Path, subfolder: str | None = None, nested: tuple[str, ...] = ()) -> None:
    """Extract a tar or zip archive into `into` (only its `subfolder`, if given, whose contents land in
    `into`; the `nested` archives inside it extracted where they lie, and dropped); members that would land
    outside it, links, devices and other special files are refused before anything is written. What is
    already in `into` is kept: files the archive lacks, and files of the same name (see _merge)."""
    into.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=into, prefix=".extract-") as tmp:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, Path(tmp))
        else:
            _extract_tar(archive, Path(tmp))
        taken = Path(tmp) / PurePosixPath(subfolder) if subfolder else Path(tmp)
        if not taken.is_dir():
            raise UserError(f"{archive} has no folder {subfolder!r}; delete it and download it again")
        for inner in nested:  # an archive of archives (Caltech101's zip holds its tar.gz): ours, in tmp
            path = taken / PurePosixPath(inner)
            if path.is_file():
                safe_extract(path, path.parent)
                path.unlink()
        _merge(taken, into)


def _unsafe(archive: Path, name: str) -> UserError:
    return UserError(f"{archive} has an unsafe member {name!r} (absolute path, '..', link or special file); "
                     "refusing to extract it. Delete the archive and download it again")


def _safe_name(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return bool(name) and not path.is_absolute() and ".." not in path.parts and ":" not in path.parts[0]


def _extract_tar(archive: Path, dest: Path) -> None:
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for m in members:
                if not _safe_name(m.name) or not (m.isfile() or m.isdir()):
                    raise _unsafe(archive, m.name)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # Python before 3.10.12 / 3.11.4: no filters; the members were checked above
                _extract_plain(tar, members, dest)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise UserError(f"{archive} is not a readable tar or zip archive ({err}); delete it and download it "
                        "again") from None


def _extract_zip(archive: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as z:
            members = z.infolist()
            for m in members:
                kind = (m.external_attr >> 16) & 0o170000  # the Unix file type, where the zip records one
                if not _safe_name(m.filename) or kind not in (0, 0o100000, 0o040000):
                    raise _unsafe(archive, m.filename)
            _write_members(dest, members, lambda m: m.filename, lambda m: m.is_dir(), z.open)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise UserError(f"{archive} is not a readable zip archive ({err}); delete it and download it again") from None


def _extract_plain(tar: tarfile.TarFile, members: list, dest: Path) -> None:
    _write_members(dest, members, lambda m: m.name, lambda m: m.isdir(), tar.extractfile)


def _write_members(dest: Path, members, name, is_dir, open_member) -> None:
    """Regular files and folders only (checked before), written with default permissions (what tar's
    filter="data" keeps)."""
    for m in members:
        target = dest / PurePosixPath(name(m))
        if is_dir(m):
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_member(m) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)


def _merge(src: Path, dst: Path) -> None:
    """Move the tree `src` into `dst` without replacing anything there: files of `dst` that `src` lacks stay
    (a split file put there by hand survives the images archive), and so does a file of the same name (it
    may be the user's; an interrupted earlier merge leaves only whole files, each moved by one rename). A
    file where the archive has a folder, or the reverse, is refused: the user's entry is in the way."""
    for child in sorted(src.iterdir()):
        target = dst / child.name
        if not target.exists() and not target.is_symlink():
            child.replace(target)
        elif child.is_dir() and target.is_dir() and not target.is_symlink():
            _merge(child, target)
        elif child.is_dir() or target.is_dir() or target.is_symlink():
            raise UserError(f"{target} is in the way of the archive's {'folder' if child.is_dir() else 'file'} of "
                            "that name; move it away and run again")


def fetch(remote: Remote, dest: Path, progress: bool = True) -> bool:
    """`remote` at `dest`: kept when a verified copy is already there, downloaded when nothing is; a file of
    that name that is not the published one is someone's, and refused rather than replaced. Returns
    whether it was downloaded now (only then is it crossgate's to delete)."""
    if dest.is_file() and verify(dest, remote):
        return False
    if dest.exists() or dest.is_symlink():
        raise UserError(f"{dest} is not the file crossgate downloads there ({remote.url}: the checksum "
                        "differs); move it away and run again, or put a verified copy there")
    download(remote, dest, progress)
    return True


def ensure_files(dataset: str, root: Path, role: str, progress: bool = True) -> None:
    """Download and extract the `role` files of `dataset` under `root`, skipping what is already there."""
    files, _ = remotes(dataset)
    for remote in (r for r in files if r.role == role):
        if remote.target(root).exists():
            continue
        dest = root / remote.path
        downloaded = fetch(remote, dest, progress)
        if remote.extract_to is not None:
            safe_extract(dest, root / remote.extract_to, remote.extract_from, remote.nested)
            if not remote.target(root).exists():
                raise UserError(f"{dest} did not contain {remote.provides}; delete it and download it again")
            if downloaded:  # extracted: crossgate's download is no longer needed (a copy you put there stays)
                dest.unlink()


def ensure_indices(dataset: str, root: Path, progress: bool = True) -> list[str]:
    """Fetch Lin et al.'s published few-shot index files; returns the problems (the sampler stands in)."""
    _, indices = remotes(dataset)
    problems = []
    for remote in indices:
        dest = root / remote.path
        if dest.is_file():
            continue
        try:
            download(remote, dest, progress=False)
        except UserError as err:
            problems.append(str(err))
    return problems
