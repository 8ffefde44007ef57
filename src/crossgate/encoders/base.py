"""The backbone interface: a frozen image tower and text tower with a narrow API."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from ..images import to_rgb  # noqa: F401  (re-exported for the encoders)
from ..registry import Registry


class Encoder(ABC):
    """encode_images / encode_texts return float32 numpy arrays; the identity string keys the cache."""

    name: str
    image_dim: int
    text_dim: int  # size of encode_texts' output: in image space when the towers are aligned
    native_text_dim: int  # size of the text tower's own output (equal to text_dim for CLIP)
    preprocess: Callable[[Image.Image], torch.Tensor]  # PIL image -> (3, H, W) tensor
    device: str = "cpu"

    @property
    @abstractmethod
    def identity(self) -> str:
        """Name, weights digest and preprocessing: two encoders with equal identity give equal features."""

    @abstractmethod
    def encode_images(self, pixels: torch.Tensor) -> np.ndarray:
        """(N, 3, H, W) preprocessed pixels -> (N, image_dim) float32."""

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Texts -> (M, text_dim) float32, comparable with image features."""
        return self.encode_texts_both(texts)[0]

    @abstractmethod
    def encode_texts_both(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(aligned (M, text_dim), native (M, native_text_dim)); one text-tower pass for both."""


BACKBONES: Registry[Encoder] = Registry("backbone")
