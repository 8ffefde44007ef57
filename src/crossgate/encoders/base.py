"""The backbone interface: a frozen image tower and text tower with a narrow API."""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from ..errors import UserError
from ..images import to_rgb  # noqa: F401  (re-exported for the encoders)
from ..pixels import DECODES, PixelSpec, spec_of
from ..registry import Registry


class Encoder(ABC):
    """encode_images / encode_texts return float32 numpy arrays; the identity string keys the cache."""

    name: str
    image_dim: int
    text_dim: int  # size of encode_texts' output: in image space when the towers are aligned
    native_text_dim: int  # size of the text tower's own output (equal to text_dim for CLIP)
    preprocess: Callable[[Image.Image], torch.Tensor]  # PIL image -> (3, H, W) tensor
    device: str = "cpu"
    decode: str = "pil"  # "pil": PIL decodes and preprocesses on the CPU; "torch": crossgate.pixels on the device

    @property
    def pixel_spec(self) -> PixelSpec | None:
        """The preprocessing as tensor ops, where it can be expressed so."""
        return spec_of(self.preprocess)

    def use_decode(self, decode: str) -> Encoder:
        """Choose the decode path; "auto" takes the tensor path on a GPU when the preprocessing allows it."""
        if decode not in DECODES:
            raise UserError(f"--decode must be one of {', '.join(DECODES)}, got {decode!r}")
        if decode == "auto":
            decode = "torch" if str(self.device).startswith("cuda") and self.pixel_spec is not None else "pil"
        if decode == "torch" and self.pixel_spec is None:
            raise UserError(f"--decode torch: the preprocessing of {self.name} is not a shorter-side resize, "
                            "center crop and normalisation, so it cannot run as tensor ops; use --decode pil")
        self.decode = decode
        return self


    precision: str = "fp32"  # of the image tower's forward pass

    @property
    @abstractmethod
    def model_identity(self) -> str:
        """Name, weights digest and preprocessing: the model whose features these are."""

    @property
    def identity(self) -> str:
        """What makes the numbers, the cache key: the model, plus the device and precision where they are
        not the CPU's fp32 (kernels round differently) and the tensor decode (its resize rounds differently
        from PIL's). Two encoders with equal identity give equal features."""
        # the pixel spec only where it names the numbers (the tensor decode): building it can load torchvision
        spec = self.pixel_spec if self.decode != "pil" else None
        return self.model_identity + numerics_suffix(self.device, self.precision, self.decode, spec)

    @abstractmethod
    def encode_images(self, pixels: torch.Tensor) -> np.ndarray:
        """(N, 3, H, W) preprocessed pixels -> (N, image_dim) float32."""

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Texts -> (M, text_dim) float32, comparable with image features."""
        return self.encode_texts_both(texts)[0]

    @abstractmethod
    def encode_texts_both(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(aligned (M, text_dim), native (M, native_text_dim)); one text-tower pass for both."""


def numerics_suffix(device: str, precision: str, decode: str, spec: PixelSpec | None) -> str:
    device_type = torch.device(device).type
    return (("" if device_type == "cpu" and precision == "fp32" else f";{device_type}-{precision}")
            + ("" if decode == "pil" else f";decode={spec.identity}"))


_NUMERICS = re.compile(r"(;[a-z]+-(fp16|bf16|fp32))?(;decode=[^;]*)?$")


def same_model(identity_a: str, identity_b: str) -> bool:
    """Whether two identities name one model, whatever device, precision or decode computed them: a
    classifier fitted on CPU features predicts from GPU features (cosine >= 0.9999)."""
    return _NUMERICS.sub("", identity_a) == _NUMERICS.sub("", identity_b)


BACKBONES: Registry[Encoder] = Registry("backbone")
