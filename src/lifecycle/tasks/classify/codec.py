"""classify's inputs: any image as 8-bit grey, resized to the model's square input and normalised."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from lifecycle.imaging import decode_gray
from lifecycle.samples import Label
from lifecycle.tasks.parts import Codec

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass(frozen=True)
class ImageTransform:
    """uint8 1xHxW image -> normalised float tensor of the model's input size (augmented when training)."""

    size: int
    augment: v2.Compose | None = None

    def __call__(self, image: torch.Tensor, target: Any) -> tuple[torch.Tensor, Any]:
        if tuple(image.shape[-2:]) != (self.size, self.size):
            image = TF.resize(image, [self.size, self.size], antialias=True)
        if self.augment is not None:
            image = self.augment(image)
        return (image.float() / 255.0 - MNIST_MEAN) / MNIST_STD, target


def denormalise(images: torch.Tensor) -> torch.Tensor:
    """Model inputs back to [0, 1] grey, for pictures."""
    return (images * MNIST_STD + MNIST_MEAN).clamp(0, 1)


class ClassifyCodec(Codec):
    reads = ("collect", "validation", "model", "train")

    def decode(self, data: bytes) -> torch.Tensor:
        return decode_gray(data, self.cfg.validation.max_side)

    def encode_target(self, label: Label) -> int:
        return list(self.cfg.collect.classes).index(label)

    def transform(self, train: bool) -> ImageTransform:
        return ImageTransform(self.cfg.model.input_size, self.cfg.train.augmentation() if train else None)
