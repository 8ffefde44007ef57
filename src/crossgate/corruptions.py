"""Corruptions for the robustness benchmark: images (ImageNet-C-style severities 1-5) and prompts.

Image corruptions act on the image file as stored, before the encoder's preprocessing; spatial sizes
(blur radius) scale with the image so a severity means the same on 28 px and 500 px images. Every
random draw comes from (seed, image position, severity, corruption), so a corrupted test set is the same
in every run. Text corruptions rewrite the prompt pool that fitted heads consult at prediction time.
"""
from __future__ import annotations

import io
import string
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from .errors import UserError

SEVERITIES = (1, 2, 3, 4, 5)

# parameters per severity 1..5
_NOISE_SIGMA = (0.08, 0.12, 0.18, 0.26, 0.38)  # gaussian noise std, images in [0, 1]
_BLUR_RADIUS = (1, 2, 3, 4, 6)  # gaussian blur sigma in pixels of a 224-px image
_JPEG_QUALITY = (25, 18, 15, 10, 7)
_CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)  # remaining share of the contrast around the mean
_OCCLUDED = (0.1, 0.2, 0.3, 0.4, 0.5)  # share of the image area covered by one grey square
_TYPO_RATE = (0.02, 0.05, 0.1, 0.15, 0.2)  # chance per letter of an edit
_DROP_RATE = (0.1, 0.2, 0.3, 0.4, 0.5)  # chance per word of being dropped
_DISTRACTOR_SHARE = (0.2, 0.4, 0.6, 0.8, 1.0)  # distractor prompts added, relative to the pool size

# names of things outside any of our datasets' label sets, for distractor prompts
DISTRACTOR_NAMES = ("toaster", "violin", "lighthouse", "umbrella", "tractor", "volcano", "accordion", "cactus",
                    "submarine", "teapot", "windmill", "saxophone", "igloo", "microscope", "canoe", "chandelier",
                    "typewriter", "snowplow", "hourglass", "trombone", "telescope", "bulldozer", "harp",
                    "parachute", "cathedral", "lawn mower", "stethoscope", "barometer", "pagoda", "forklift")


def _noise(x, s, rng):
    return x + rng.normal(0.0, _NOISE_SIGMA[s - 1], size=x.shape)


def _contrast(x, s, rng):
    mean = x.mean(axis=(0, 1), keepdims=True)
    return mean + (x - mean) * _CONTRAST[s - 1]


def _occlusion(x, s, rng):
    h, w = x.shape[:2]
    side = max(1, round(np.sqrt(_OCCLUDED[s - 1] * h * w)))
    side_h, side_w = min(side, h), min(side, w)
    top, left = rng.integers(0, h - side_h + 1), rng.integers(0, w - side_w + 1)
    x = x.copy()
    x[top:top + side_h, left:left + side_w] = 0.5
    return x


ARRAY_CORRUPTIONS = {"gaussian_noise": _noise, "contrast": _contrast, "occlusion": _occlusion}


def _blur(image: Image.Image, s: int) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(_BLUR_RADIUS[s - 1] * min(image.size) / 224))


def _jpeg(image: Image.Image, s: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=_JPEG_QUALITY[s - 1])
    buf.seek(0)
    return Image.open(buf).convert("RGB")


IMAGE_CORRUPTIONS = ("gaussian_noise", "blur", "jpeg", "contrast", "occlusion")
TEXT_CORRUPTIONS = ("typos", "drop_words", "distractors")
ALL = IMAGE_CORRUPTIONS + TEXT_CORRUPTIONS


@dataclass(frozen=True)
class Corruption:
    name: str
    severity: int

    @property
    def kind(self) -> str:
        return "image" if self.name in IMAGE_CORRUPTIONS else "text"

    @property
    def label(self) -> str:
        return f"{self.name}:{self.severity}"

    def view(self, seed: int) -> str:
        """The feature-cache view of the corrupted test images."""
        return f"corrupt:{self.name}:{self.severity}:{seed}"


def parse_specs(text: str) -> tuple[Corruption, ...]:
    """'gaussian_noise:1-5,blur:3,typos' -> corruptions; a missing severity means 3; 'all' names every one."""
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        name, _, sev = item.partition(":")
        names = ALL if name == "all" else (name,)
        if name != "all" and name not in ALL:
            raise UserError(f"unknown corruption {name!r}; available: {', '.join(ALL)}, or all")
        try:
            lo, _, hi = (sev or "3").partition("-")
            severities = range(int(lo), int(hi or lo) + 1)
        except ValueError:
            raise UserError(f"bad severity in {item!r}: write NAME:S or NAME:S1-S2 with S in 1-5") from None
        if not severities or not set(severities) <= set(SEVERITIES):
            raise UserError(f"bad severity in {item!r}: severities run from 1 to 5")
        out += [Corruption(n, s) for n in names for s in severities]
    if not out:
        raise UserError("--corrupt needs at least one corruption, e.g. gaussian_noise:1-5,typos:2")
    return tuple(dict.fromkeys(out))


def _rng(seed: int, position: int, c: Corruption) -> np.random.Generator:
    return np.random.default_rng([seed, position, c.severity, ALL.index(c.name)])


def corrupt_image(image: Image.Image, c: Corruption, seed: int, position: int) -> Image.Image:
    """The corrupted RGB image; the same for the same (image, corruption, seed, position)."""
    if c.name == "blur":
        return _blur(image, c.severity)
    if c.name == "jpeg":
        return _jpeg(image, c.severity)
    x = np.asarray(image, dtype=np.float64) / 255.0
    x = ARRAY_CORRUPTIONS[c.name](x, c.severity, _rng(seed, position, c))
    return Image.fromarray(np.round(np.clip(x, 0.0, 1.0) * 255).astype(np.uint8), "RGB")


def view_transform(view: str):
    """The image transform of a cache view 'corrupt:<name>:<severity>:<seed>', as f(image, position)."""
    _, name, severity, seed = view.split(":")
    c = Corruption(name, int(severity))
    return lambda image, position: corrupt_image(image, c, int(seed), position)


def _typos(text: str, rate: float, rng: np.random.Generator) -> str:
    chars, out, i = list(text), [], 0
    while i < len(chars):
        ch = chars[i]
        if ch.isalpha() and rng.random() < rate:
            edit = rng.integers(4)
            if edit == 0:  # delete
                i += 1
                continue
            if edit == 1 and i + 1 < len(chars):  # swap with the next character
                out += [chars[i + 1], ch]
                i += 2
                continue
            letter = string.ascii_lowercase[rng.integers(26)]
            out += [letter] if edit == 2 else [ch, letter]  # replace / insert
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _drop_words(text: str, rate: float, rng: np.random.Generator) -> str:
    words = text.split()
    kept = [w for w in words if rng.random() >= rate]
    return " ".join(kept or words[:1])


def corrupt_prompts(texts: list[str], labels: np.ndarray, templates: list[str], c: Corruption,
                    seed: int) -> tuple[list[str], np.ndarray]:
    """The corrupted prompt pool. Distractors (prompts naming things outside the label set) get label -1
    and come after the original prompts, so positions of the originals do not move."""
    rng = np.random.default_rng([seed, c.severity, ALL.index(c.name)])
    labels = np.asarray(labels, dtype=np.int64)
    if c.name == "typos":
        return [_typos(t, _TYPO_RATE[c.severity - 1], rng) for t in texts], labels
    if c.name == "drop_words":
        return [_drop_words(t, _DROP_RATE[c.severity - 1], rng) for t in texts], labels
    if c.name == "distractors":
        n = max(1, round(_DISTRACTOR_SHARE[c.severity - 1] * len(texts)))
        names = rng.choice(DISTRACTOR_NAMES, size=n)
        extra = [templates[i % len(templates)].format(name) for i, name in enumerate(names)]
        return list(texts) + extra, np.concatenate([labels, np.full(n, -1, dtype=np.int64)])
    raise ValueError(f"{c.name} is not a text corruption")
