"""Parts that several tasks share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from lifecycle.imaging import IMAGE_SHIFTS, encode_png_tensor, image_descriptors, shift_image
from lifecycle.tasks.parts import Codec, Monitoring

if TYPE_CHECKING:
    import numpy as np


class ImageMonitoring(Monitoring):
    """Image descriptors (size, intensity, sharpness) and the image shifts, decoded the task's own way."""

    shifts = IMAGE_SHIFTS

    def __init__(self, cfg: Any, codec: Codec) -> None:
        super().__init__(cfg)
        self.codec = codec

    def descriptors(self, raw_input: torch.Tensor) -> dict[str, float]:
        return image_descriptors(raw_input)

    def shift(self, data: bytes, kind: str, rng: np.random.Generator) -> bytes:
        return encode_png_tensor(shift_image(self.codec.decode(data), kind, rng))
