"""classify's inputs: any image as grey or RGB, resized with its aspect ratio kept to the model's square input,
and normalised with the model's own statistics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from lifecycle.imaging import decode_gray, decode_rgb
from lifecycle.samples import Label
from lifecycle.tasks.parts import Codec
from lifecycle.weights import read_weights


def to_square(image: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """A uint8 CxHxW image as CxSxS with its aspect ratio kept: the short side resized to S and the long side
    centre-cropped (`crop`), or the long side resized to S and the short side padded with black (`pad`)."""
    h, w = image.shape[-2:]
    if (h, w) == (size, size):
        return image
    if mode == "crop":
        return TF.center_crop(TF.resize(image, [size], antialias=True), [size, size])
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    image = TF.resize(image, [nh, nw], antialias=True)
    top, left = (size - nh) // 2, (size - nw) // 2
    return TF.pad(image, [left, top, size - nw - left, size - nh - top], fill=0)


def channel_statistics(images: Sequence[torch.Tensor]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the [0, 1] pixels of uint8 CxHxW images of any sizes."""
    channels = images[0].shape[0]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    count = 0
    for image in images:
        pixels = image.reshape(channels, -1).double() / 255.0
        total += pixels.sum(dim=1)
        squares += (pixels * pixels).sum(dim=1)
        count += pixels.shape[1]
    mean = total / max(count, 1)
    std = (squares / max(count, 1) - mean * mean).clamp_min(1e-12).sqrt()
    return [round(float(m), 6) for m in mean], [round(max(float(s), 1e-3), 6) for s in std]


@dataclass(frozen=True)
class ImageTransform:
    """uint8 CxHxW image -> normalised float tensor of the model's input size (augmented when training)."""

    size: int
    mode: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: v2.Compose | None = None

    def __call__(self, image: torch.Tensor, target: Any) -> tuple[torch.Tensor, Any]:
        image = to_square(image, self.size, self.mode)
        if self.augment is not None:
            image = self.augment(image)
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return (image.float() / 255.0 - mean) / std, target


def normalization(model_cfg: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The model's (mean, std); unset (before the pipeline fitted them) pixels are only scaled to [0, 1]."""
    norm = model_cfg.normalize
    return ((0.0,), (1.0,)) if norm is None else (tuple(norm.mean), tuple(norm.std))


def denormalise(images: torch.Tensor, model_cfg: Any) -> torch.Tensor:
    """Model inputs back to [0, 1] pixels, for pictures."""
    mean, std = (torch.tensor(v).view(-1, 1, 1) for v in normalization(model_cfg))
    return (images * std + mean).clamp(0, 1)


class ClassifyCodec(Codec):
    reads = ("collect", "validation", "model", "train")

    def decode(self, data: bytes) -> torch.Tensor:
        decode = decode_rgb if self.cfg.model.channels == 3 else decode_gray
        return decode(data, self.cfg.validation.max_side)

    def encode_target(self, label: Label) -> int:
        return list(self.cfg.collect.classes).index(label)

    def transform(self, train: bool) -> ImageTransform:
        m = self.cfg.model
        mean, std = normalization(m)
        return ImageTransform(m.input_size, m.resize, mean, std, self.cfg.train.augmentation() if train else None)

    def fit(self, inputs: Sequence[Any]) -> dict[str, Any]:
        """Normalisation: the initial weights' own, else model.normalize, else the training split's statistics."""
        m = self.cfg.model
        if m.weights is not None:
            weights = read_weights(m.weights)
            if weights.mean is not None and weights.std is not None:
                mean, std = weights.mean, weights.std
                if m.channels == 1:  # grey inputs are repeated to RGB: one value for all three channels
                    mean, std = [sum(mean) / len(mean)], [sum(std) / len(std)]
                return {"normalize": {"mean": mean, "std": std, "source": f"weights {weights.origin}"}}
        if m.normalize is not None:
            return {}
        mean, std = channel_statistics(inputs)
        return {"normalize": {"mean": mean, "std": std, "source": "training split"}}
