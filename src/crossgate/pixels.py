"""Decoding and preprocessing as tensor ops on the encoding device (the "torch" decode).

The PIL path decodes and resizes every image on the CPU, one at a time, then ships float pixels to the
device: on a GPU the CPU cannot keep up (issue 13: 4-9% of the encoder's speed). Here the loader workers
only read file bytes; JPEGs are decoded in batches by torchvision.io.decode_jpeg on the device (nvjpeg on
a GPU, libjpeg-turbo on a CPU) and resized, cropped and normalised there. What that decoder cannot take
(not a JPEG, CMYK or grayscale, progressive, no end marker) is decoded by PIL in the worker and joins the
same tensor resize. Bicubic resize of a uint8 tensor (antialiased) rounds differently from PIL's, so this
preprocessing is part of the encoder's identity; benchmarks/extract_throughput.py prints the cosine of its
features against the PIL path's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .images import open_rgb

DECODES = ("auto", "pil", "torch")
# steps that only make an RGB image or a [0, 1] float tensor (torchvision's, open_clip's, crossgate's)
_CONVERSIONS = ("ToTensor", "MaybeToTensor", "MaybeConvertMode", "to_rgb", "_convert_to_rgb")


@dataclass(frozen=True)
class PixelSpec:
    """A PIL preprocessing of the form Resize(shorter side) -> CenterCrop -> ToTensor -> Normalize."""

    size: int  # shorter side after the resize
    crop: int  # square center crop
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    @property
    def identity(self) -> str:
        return (f"torch-{self.interpolation}{self.size}-crop{self.crop}-mean{','.join(f'{m:g}' for m in self.mean)}"
                f"-std{','.join(f'{s:g}' for s in self.std)}")


def spec_of(preprocess) -> PixelSpec | None:
    """The PixelSpec of a torchvision Compose, or None when it holds a step this module cannot reproduce
    (then the encoder keeps the PIL path)."""
    from torchvision import transforms as T

    size = crop = mean = std = interpolation = None
    for step in getattr(preprocess, "transforms", []):
        if isinstance(step, T.Resize):
            if not isinstance(step.size, int) and not (isinstance(step.size, (list, tuple)) and len(step.size) == 1):
                return None  # a fixed (h, w) squash or a max_size: not the shorter-side resize
            if step.max_size is not None or step.interpolation not in (T.InterpolationMode.BICUBIC,
                                                                       T.InterpolationMode.BILINEAR):
                return None
            size = step.size if isinstance(step.size, int) else step.size[0]
            interpolation = step.interpolation.value
        elif isinstance(step, T.CenterCrop):
            if len(set(step.size)) != 1:
                return None
            crop = step.size[0]
        elif isinstance(step, T.Normalize):
            mean, std = tuple(float(m) for m in step.mean), tuple(float(s) for s in step.std)
        elif type(step).__name__ in _CONVERSIONS or getattr(step, "__name__", "") in _CONVERSIONS:
            continue  # to RGB, to a [0, 1] tensor: the tensor path does both
        else:
            return None
    if None in (size, crop, mean, std) or size < crop:
        return None
    return PixelSpec(size=size, crop=crop, mean=mean, std=std, interpolation=interpolation)


def read_for_decode(path, missing_hint: str, flip: bool = False):
    """("jpeg", the file's bytes) for a JPEG the tensor decoder takes, else ("rgb", HWC uint8 array)
    decoded by PIL. A missing or unreadable file raises crossgate's UserError, as open_rgb does. Bytes,
    not a tensor: from a loader worker a tensor travels through a shared-memory segment of its own."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return "rgb", _as_array(open_rgb(path, missing_hint), flip)  # open_rgb words the error
    if _plain_jpeg(data):
        return "jpeg", data
    return "rgb", _as_array(open_rgb(path, missing_hint), flip)


def _as_array(image: Image.Image, flip: bool) -> np.ndarray:
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.array(image, dtype=np.uint8)  # a writable copy: torch.from_numpy wants one


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame; C4/C8/CC are not frames
_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}  # markers without a length field


def _plain_jpeg(data: bytes) -> bool:
    """A complete baseline 3-channel JPEG: what nvjpeg decodes the way libjpeg does. Walks the marker
    segments up to the frame header instead of asking PIL (a PIL header parse per file held the GIL for
    longer than reading the file took)."""
    if not data.startswith(b"\xff\xd8") or not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return False
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in _SOF_MARKERS:
            # baseline or extended sequential Huffman (not progressive, lossless or arithmetic), 3 components
            return marker in (0xC0, 0xC1) and pos + 10 <= end and data[pos + 9] == 3
        if marker == 0xDA:  # a scan before any frame header: not a valid JPEG
            return False
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == 0xE1 and _exif_orientation(data[pos + 4:pos + 2 + length]) not in (None, 1):
            return False  # stored turned: PIL turns it upright (the decoder would not)
        pos += 2 + length
    return False


def _exif_orientation(segment: bytes) -> int | None:
    """The orientation tag (0x0112) of an APP1 Exif segment's first image directory, or None."""
    if not segment.startswith(b"Exif\0\0") or len(segment) < 14:
        return None
    tiff = segment[6:]
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None:
        return None
    at = int.from_bytes(tiff[4:8], order)
    if at + 2 > len(tiff):
        return None
    for i in range(int.from_bytes(tiff[at:at + 2], order)):
        entry = tiff[at + 2 + 12 * i:at + 14 + 12 * i]
        if len(entry) < 12:
            return None
        if int.from_bytes(entry[:2], order) == 0x0112:
            return int.from_bytes(entry[8:10], order)
    return None


def decode_jpegs(blobs: list[bytes | torch.Tensor], device: str) -> list[torch.Tensor | None]:
    """(3, H, W) uint8 tensors on `device`; None where the decoder refused the file. One batched call
    when every file decodes; after a failure, file by file."""
    import warnings

    from torchvision.io import ImageReadMode, decode_jpeg

    if not blobs:
        return []
    blobs = [torch.frombuffer(bytearray(b), dtype=torch.uint8) if isinstance(b, bytes) else b for b in blobs]
    # torchvision 0.29 marks its decoders deprecated in favour of torchcodec, which has no batched nvjpeg
    # decode of image files yet; the warning would print once per run
    warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
    try:
        return [t.to(device) for t in decode_jpeg(blobs, mode=ImageReadMode.RGB, device=device)]
    except RuntimeError:
        out = []
        for blob in blobs:
            try:
                out.append(decode_jpeg(blob, mode=ImageReadMode.RGB, device=device).to(device))
            except RuntimeError:
                out.append(None)
        return out


def preprocess_batch(images: list[torch.Tensor], spec: PixelSpec, flip: list[bool] | None = None) -> torch.Tensor:
    """(N, 3, crop, crop) float32 normalised pixels from (3, H, W) uint8 tensors on one device. Images of
    one size are resized together (one kernel for the group)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    mode = InterpolationMode(spec.interpolation)
    device = images[0].device
    out = torch.empty((len(images), 3, spec.crop, spec.crop), dtype=torch.float32, device=device)
    groups: dict[tuple, list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(i)
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1) * 255.0
    for members in groups.values():
        batch = torch.stack([images[i] for i in members])
        if flip is not None:
            which = torch.tensor([flip[i] for i in members], device=device)
            if which.any():
                batch = torch.where(which.view(-1, 1, 1, 1), batch.flip(-1), batch)
        batch = F.resize(batch, [spec.size], interpolation=mode, antialias=True)
        batch = F.center_crop(batch, [spec.crop, spec.crop])
        out[torch.tensor(members, device=device)] = (batch.float() - mean) / std
    return out
