"""Image features of one split, computed in chunks that survive a crash and merge into one cache entry.

A split is cut into chunks of whole encoder batches. Each finished chunk is written atomically to
`<entry>.partial-<chunk>/`; a rerun after kill -9 encodes only the missing chunks. Because every chunk
starts on a batch boundary, the batches (and so the floats) are those of an uninterrupted run. The merge
streams the chunks into the final entry (safetensors + manifest), so memory does not grow with the
number of images. Chunks can also be shared out among processes (torchrun ranks), each encoding its own.
"""
from __future__ import annotations

import itertools
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import augment, corruptions, pixels
from .allocator import keep_freed_memory
from .datasets.base import Split
from .encoders.base import Encoder
from .errors import UserError
from .jsonio import read_json
from .progress import progress
from .storage import load_arrays, lock_file, save_arrays, save_streamed

VIEWS = ("center", "flip")  # the encoder's center crop; the same of the horizontally mirrored image (Lin et al.)
ON_BAD_IMAGE = ("fail", "skip")
log = logging.getLogger("crossgate")


class UnreadableImages(UserError):
    """Every unreadable image of one or more splits; the message lists them all."""

    def __init__(self, names: list[str], first_error: str):
        self.names, self.first_error = names, first_error
        first = first_error.removesuffix("; fix or remove it")  # the advice follows once, for all of them
        super().__init__(f"{len(names)} unreadable image(s): {', '.join(names)} (first: {first}); fix or "
                         "remove them, or pass --on-bad-image skip to leave them out")


def load_group(batch_size: int, workers: int) -> int:
    """Images per loader task; the main process regroups them into encoder batches. Whole encoder batches
    as tasks left 8 workers half idle on 4 batches, and the first batch came only after one worker had
    decoded all of it alone (issue 13); tasks of 8 images cost a queue round trip each, which capped 8
    workers at 3,900 img/s on a 16-core GPU machine. So: every worker gets a task per batch, 8 to 64 images."""
    return min(64, max(8, batch_size // max(1, workers)))


class _PixelDataset(torch.utils.data.Dataset):
    """(position, pixels or None, error or None): an unreadable image is reported, not raised, so that one
    pass can list every bad file. With the tensor decode, "pixels" is ("jpeg", bytes) or ("rgb", array)."""

    def __init__(self, split: Split, positions: list[int], preprocess, view: str, tensor_decode: bool = False):
        self.split, self.positions, self.preprocess, self.view = split, positions, preprocess, view
        self.transform = view_transform(view, preprocess)
        self.tensor_decode = tensor_decode

    def __len__(self):
        return len(self.positions)

    def __getitem__(self, j):
        i = self.positions[j]
        try:
            if self.tensor_decode and self.split.locate is not None and self.view in VIEWS:
                return i, pixels.read_for_decode(self.split.locate(i), self.split.missing_hint,
                                                 flip=self.view == "flip"), None
            keys = self.split.item_keys
            image = self.transform(self.split.load_image(i), i if keys is None else tuple(int(k) for k in keys[i]))
        except UserError as err:
            return i, None, str(err)
        if self.tensor_decode:
            return i, ("rgb", np.array(image.convert("RGB"), dtype=np.uint8)), None
        return i, self.preprocess(image), None


def view_transform(view: str, preprocess=None):
    """f(image, position) for a view: "center" (as is), "flip" (mirrored), "corrupt:<name>:<severity>:<seed>",
    "aug:<seed>" (a random resized crop to the encoder's input size, and a random flip; augment.py)."""
    if view.startswith("aug:"):
        spec = pixels.spec_of(preprocess) if preprocess is not None else None
        if spec is None:
            raise UserError("--aug-views needs an encoder whose preprocessing is a resize and a center crop (its "
                            "input size); this one's is not")
        return augment.view_transform(view, spec.crop)
    if view == "center":
        return lambda image, position: image
    if view == "flip":
        return lambda image, position: image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if view.startswith("corrupt:"):
        return corruptions.view_transform(view)
    raise ValueError(f"unknown view {view!r}; available: {', '.join(VIEWS)}, corrupt:<name>:<severity>:<seed> or "
                     "aug:<seed>")


def _groups(items: Iterator, batch_size: int):
    """`items` regrouped into lists of `batch_size` (the last may be shorter)."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


READ_THREADS = 1  # threads reading file bytes for the tensor decode (see _read_in_threads)


def _read_in_threads(dataset: _PixelDataset, threads: int = READ_THREADS, group: int = 32,
                     ahead: int = 16) -> Iterator:
    """dataset[0], dataset[1], ... read in tasks of `group` items by a pool of threads, at most `ahead`
    tasks in flight. For the tensor decode's file bytes: nothing is pickled between processes and a
    thread starts in no time (8 loader processes delivered 3,900 img/s on a 16-core GPU machine, less than
    ViT-B-16's forward pass). Few threads: reading a cached file takes ~30 us, and more threads than that
    work needs only pass the GIL around (16-19k img/s with one thread on the H100 machine, 12-16k with two,
    4-10k with eight; 20-36k img/s here)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    def task(js: range) -> list:
        return [dataset[j] for j in js]

    tasks = iter(range(s, min(s + group, len(dataset))) for s in range(0, len(dataset), group))
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="crossgate-read") as pool:
        pending = deque(pool.submit(task, js) for js in itertools.islice(tasks, ahead))
        try:
            while pending:
                items = pending.popleft().result()
                js = next(tasks, None)
                if js is not None:
                    pending.append(pool.submit(task, js))
                yield from items
        finally:
            for future in pending:
                future.cancel()


def _split_items(batch):
    good = [(i, p) for i, p, _ in batch if p is not None]
    bad = [(i, error) for i, _, error in batch if error is not None]
    return good, bad


def _prefetched(batches: Iterator, device: str, depth: int = 2) -> Iterator:
    """Run `batches` (a generator of (positions, pixels, bad)) in a background thread, `depth` batches
    ahead, on its own CUDA stream on a GPU: decoding batch k+1 overlaps the forward pass of batch k."""
    import queue
    import threading

    cuda = device.startswith("cuda")
    stream = torch.cuda.Stream(device=device) if cuda else None
    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            with torch.cuda.stream(stream) if cuda else _nothing():
                for good, pix, bad in batches:
                    event = None
                    if cuda:
                        event = torch.cuda.Event()
                        event.record(stream)
                    while not stop.is_set():
                        try:
                            box.put((good, pix, bad, event), timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            box.put(done)
        except BaseException as err:  # noqa: BLE001  (re-raised in the consumer)
            box.put(err)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = box.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            good, pix, bad, event = item
            if event is not None and pix is not None:
                torch.cuda.current_stream(device).wait_event(event)
                if pix.is_cuda:  # made on the loader's stream, used on this one
                    pix.record_stream(torch.cuda.current_stream(device))
            yield good, pix, bad
    finally:
        stop.set()
        thread.join(timeout=5)


@contextmanager
def _nothing():
    yield


def _tensor_pixels(encoder: Encoder, split: Split, batch, view: str) -> tuple[list[int], torch.Tensor | None, list]:
    """Decode and preprocess one batch of ("jpeg", bytes) / ("rgb", array) items on the encoder's device;
    a JPEG the device decoder refuses is decoded by PIL instead (and reported if PIL cannot either)."""
    good, bad = _split_items(batch)
    device = encoder.device
    jpegs = [j for j, (_, (kind, _)) in enumerate(good) if kind == "jpeg"]
    decoded = dict(zip(jpegs, pixels.decode_jpegs([good[j][1][1] for j in jpegs], device), strict=True))
    images, flips, kept = [], [], []
    for j, (i, (kind, payload)) in enumerate(good):
        flip = False
        if kind == "jpeg":
            image = decoded[j]
            flip = view == "flip"  # the workers mirrored the others already
            if image is None:  # nvjpeg refused it: PIL decodes it, or words why it cannot
                try:
                    image = pixels.read_for_decode(split.locate(i), split.missing_hint, flip=flip)[1]
                except UserError as err:
                    bad.append((i, str(err)))
                    continue
                image, flip = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).to(device), False
        else:
            image = torch.from_numpy(payload).permute(2, 0, 1).to(device, non_blocking=True)
        images.append(image)
        flips.append(flip)
        kept.append(i)
    if not images:
        return kept, None, bad
    return kept, pixels.preprocess_batch(images, encoder.pixel_spec, flips), bad


def encode_batches(encoder: Encoder, split: Split, positions: list[int], batch_size: int, workers: int,
                   view: str = "center") -> Iterator[tuple[list[int], np.ndarray | None, list[tuple[int, str]]]]:
    """(good positions, their features, [(bad position, error)]) per batch of `positions`, in order."""
    if encoder.device == "cpu":
        keep_freed_memory()  # 2.5x the images per second on a 2-core CPU (allocator.py)
    tensor_decode = encoder.decode == "torch"
    dataset = _PixelDataset(split, positions, encoder.preprocess, view, tensor_decode)
    if tensor_decode and split.locate is not None and view in VIEWS:  # file bytes: threads read them
        items = _read_in_threads(dataset)
    else:  # decoding (and corrupting) images: processes
        loader = torch.utils.data.DataLoader(dataset, batch_size=load_group(batch_size, workers),
                                             num_workers=workers, collate_fn=list)
        items = (item for group in loader for item in group)

    def prepared():
        for batch in _groups(items, batch_size):
            if tensor_decode:
                yield _tensor_pixels(encoder, split, batch, view)
                continue
            good, bad = _split_items(batch)
            pix = torch.stack([p for _, p in good]) if good else None
            if pix is not None and encoder.device.startswith("cuda"):
                pix = pix.pin_memory()  # lets the copy to the GPU overlap
            yield [i for i, _ in good], pix, bad

    # a thread prepares the next batch during the forward pass where that overlaps anything: on a GPU, or
    # with worker processes decoding; on a CPU without workers, decoding in a thread only fights the
    # encoder's own threads for the cores (ratio 0.78 against 0.94 inline, 2-core CPU, lite)
    overlap = encoder.device.startswith("cuda") or workers > 0
    for good, pix, bad in _prefetched(prepared(), encoder.device) if overlap else prepared():
        yield good, encoder.encode_images(pix) if pix is not None else None, bad


@dataclass(frozen=True)
class Chunks:
    """Where the chunks of one cache entry go, and which positions each covers."""

    stem: Path  # the final entry
    n: int  # images in the split
    size: int  # images per chunk, a multiple of the batch size

    @classmethod
    def of(cls, stem: Path, n: int, batch_size: int, chunk_images: int = 2048) -> Chunks:
        """Chunks of about `chunk_images` images, rounded to whole batches."""
        return cls(Path(stem), n, batch_size * max(1, chunk_images // batch_size))

    @property
    def folder(self) -> Path:
        return self.stem.with_name(f"{self.stem.name}.partial-{self.size}")

    def starts(self) -> list[int]:
        return list(range(0, self.n, self.size))

    def path(self, start: int) -> Path:
        return self.folder / f"chunk-{start:010d}"

    def done(self, start: int) -> bool:
        return load_arrays(self.path(start)) is not None


def encode_chunks(encoder: Encoder, split: Split, chunks: Chunks, starts: list[int], batch_size: int,
                  workers: int, show_progress: bool, desc: str, view: str) -> None:
    """Encode the chunks at `starts` that are not on disk yet; each is written when complete."""
    todo = [s for s in starts if not chunks.done(s)]
    positions = [i for s in todo for i in range(s, min(s + chunks.size, chunks.n))]
    total = sum(min(s + chunks.size, chunks.n) - s for s in starts)
    pending: dict[int, dict] = {}
    with progress(total=total, initial=total - len(positions), desc=desc, unit="img", enabled=show_progress) as bar:
        for good, feats, bad in encode_batches(encoder, split, positions, batch_size, workers, view):
            for row, i in enumerate(good):
                part = pending.setdefault(i - i % chunks.size, {"rows": {}, "bad": {}})
                part["rows"][i] = feats[row]
            for i, error in bad:
                pending.setdefault(i - i % chunks.size, {"rows": {}, "bad": {}})["bad"][i] = error
            for start in sorted(pending):
                part, length = pending[start], min(start + chunks.size, chunks.n) - start
                if len(part["rows"]) + len(part["bad"]) == length:
                    _write_chunk(chunks, start, part, split, encoder.image_dim)
                    del pending[start]
            bar.update(len(good) + len(bad))


def _write_chunk(chunks: Chunks, start: int, part: dict, split: Split, dim: int) -> None:
    kept = sorted(part["rows"])
    x = np.stack([part["rows"][i] for i in kept]) if kept else np.zeros((0, dim), np.float32)
    bad = [[i, split.paths[i] if split.paths else f"#{i}", part["bad"][i]] for i in sorted(part["bad"])]
    save_arrays(chunks.path(start), {"x": x.astype(np.float32), "positions": np.asarray(kept, dtype=np.int64)},
                {"bad": bad}, durable=False)  # a chunk lives until the merge, which writes durably


def chunk_summary(chunks: Chunks) -> tuple[list, int]:
    """([position, name, error] of every unreadable image, number of readable ones) of finished chunks,
    from their manifests (the arrays are verified when they are read)."""
    bad, n_good = [], 0
    for start in chunks.starts():
        try:
            manifest = read_json(chunks.path(start).with_suffix(".json"), max_bytes=64 << 20)
            bad += manifest["bad"]
            n_good += manifest["tensors"]["positions"]["shape"][0]
        except (OSError, ValueError, KeyError, TypeError, IndexError):  # BadJSON is a ValueError
            raise UserError(f"chunk {chunks.path(start)} changed or vanished on disk before the merge; run "
                            "again (the chunks still there are kept and only the missing ones recomputed)") from None
    return bad, n_good


def merge_chunks(chunks: Chunks, labels: np.ndarray, dim: int, meta: dict, on_bad_image: str,
                 desc: str = "") -> None:
    """Stream every chunk, in order, into the final entry; then remove the chunks."""
    bad, n_good = chunk_summary(chunks)
    if bad and on_bad_image == "fail":
        raise UnreadableImages([name for _, name, _ in bad], bad[0][2])

    def blocks():
        for start in chunks.starts():
            entry = load_arrays(chunks.path(start))
            if entry is None:
                raise UserError(f"chunk {chunks.path(start)} changed or vanished on disk during the merge; run "
                                "again (the chunks still there are kept and only the missing ones recomputed)")
            yield entry[0]["x"]

    small = {"labels": labels.astype(np.int64)}
    if bad:
        log.warning("skipped %d unreadable image(s) in %s: %s", len(bad), desc or chunks.stem.name,
                    ", ".join(name for _, name, _ in bad))
        kept = np.concatenate([load_arrays(chunks.path(s))[0]["positions"] for s in chunks.starts()])
        small = {"labels": labels[kept].astype(np.int64), "kept": kept}
    save_streamed(chunks.stem, "x", blocks(), (n_good, dim), small, {**meta, "skipped": [n for _, n, _ in bad]})
    for folder in chunks.stem.parent.glob(f"{chunks.stem.name}.partial-*"):
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def entry_lock(stem: Path, lock_dir: Path | None = None):
    """An exclusive lock on one cache entry: a second process computing the same entry waits, then finds
    it done. The lock file holds no data, so a lock left by a killed process is released by the kernel.
    Lock files live in `lock_dir` (the cache's locks/ folder), not beside every entry; they are not removed,
    since unlinking a lock file another process is waiting on would let a third one take a second lock."""
    stem = Path(stem)
    folder = Path(lock_dir) if lock_dir is not None else stem.parent
    path = folder / f"{stem.parent.name}-{stem.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with lock_file(path, owner_is_crossgate=True):  # a folder or link there is not a lock crossgate made
        yield
