"""Augmented views of training images: CoOp's and Tip-Adapter's training transform, made deterministic.

RandomResizedCrop(size, scale=(0.5, 1), ratio=(3/4, 4/3), bicubic) then a horizontal flip with p = 0.5,
drawn as torchvision draws them but from a generator seeded by (view seed, image position, pass): an image
gets the same crops in every run, whichever other images are encoded beside it.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

SCALE = (0.5, 1.0)  # of the image's area (GDA / Tip-Adapter / CoOp's train transform)
RATIO = (3 / 4, 4 / 3)  # torchvision's default aspect range


def crop_box(rng: np.random.Generator, width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, w, h) of a random resized crop: ten tries, then the central crop of the nearest allowed
    aspect (torchvision's RandomResizedCrop.get_params)."""
    area = width * height
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*SCALE)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    ratio = width / height
    if ratio < RATIO[0]:
        w, h = width, int(round(width / RATIO[0]))
    elif ratio > RATIO[1]:
        w, h = int(round(height * RATIO[1])), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def augment(image: Image.Image, size: int, seed: int, key: tuple[int, ...]) -> Image.Image:
    """The (size x size) augmented view of `image`, the same for the same (seed, key)."""
    rng = np.random.default_rng([seed, *key])
    left, top, w, h = crop_box(rng, *image.size)
    out = image.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + w, top + h))
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out


def view(seed: int) -> str:
    """The feature-cache view of augmented images."""
    return f"aug:{seed}"


def view_transform(view_name: str, size: int):
    """f(image, key) for a view 'aug:<seed>'; key = (position in the split, pass)."""
    seed = int(view_name.split(":")[1])
    return lambda image, key: augment(image, size, seed, key)
