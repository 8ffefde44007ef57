"""Image files to RGB: every mode PIL reads (grayscale, palette, CMYK, alpha, 16-bit) becomes 8-bit RGB;
a missing, empty, truncated or undecodable file is a UserError that names it."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import UserError

# Large JPEGs are decoded at a reduced scale (libjpeg's DCT scaling, a power of 2) that keeps both sides at
# least this long: several times faster for camera photos, and it leaves images whose shorter side is
# under 2x this (all of Pets, Food-101 and ImageNet) untouched. Encoders see 224-336 px crops.
DRAFT_MIN_SIDE = 448
# what a file's pixels are (part of every image-feature cache key): "exif" = turned as its EXIF orientation says
PIXELS_VERSION = "exif"


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB. Transparency is composited onto white (what a viewer shows), not dropped to black;
    16-/32-bit and float images are scaled to their value range rather than clipped at 255."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        scaled = np.zeros_like(values) if hi <= lo else (values - lo) / (hi - lo) * 255.0
        return Image.fromarray(np.round(scaled).astype(np.uint8), "L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def upright(image: Image.Image) -> Image.Image:
    """The image as every viewer shows it: turned and mirrored as its EXIF orientation tag says (a phone
    stores a portrait photo as landscape plus the tag)."""
    from PIL import ImageOps

    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001  (a malformed EXIF block: the pixels as stored)
        return image
    return ImageOps.exif_transpose(image) if orientation not in (None, 1) else image


def open_rgb(path: Path, missing_hint: str) -> Image.Image:
    """An image file as RGB; a missing or unreadable file is a UserError naming it."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.format == "JPEG" and min(img.size) >= 2 * DRAFT_MIN_SIDE:
                    img.draft("RGB", (DRAFT_MIN_SIDE, DRAFT_MIN_SIDE))
                img.load()  # decode now: a truncated file fails here, not later in a worker
                image = to_rgb(upright(img))
        if any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught):
            logging.getLogger("crossgate").warning("%s is a very large image (%.0f megapixels); it is read anyway, "
                                                   "slowly (encoders see a 224-336 px crop)", path,
                                                   img.size[0] * img.size[1] / 1e6)
        return image
    except FileNotFoundError:
        raise UserError(f"missing image {path}; {missing_hint}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        reason = "empty file" if Path(path).is_file() and Path(path).stat().st_size == 0 else err
        raise UserError(f"cannot read image {path} ({reason}); fix or remove it") from None
