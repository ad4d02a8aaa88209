"""classify's inputs: any image as grey or RGB, optionally turned to light strokes on dark, resized with its
aspect ratio kept to the model's square input (or framed by its ink, as MNIST was), and normalised with the model's
own statistics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from lifecycle.distortions import RandomDistortions, distort
from lifecycle.imaging import decode_gray, decode_rgb
from lifecycle.samples import Label
from lifecycle.tasks.parts import Codec
from lifecycle.weights import read_weights

INK_SHARE = 20 / 28  # MNIST: the digit's box is 20 of the image's 28 pixels
INK_LEVEL = 0.4  # ink: pixels above the background (the border's median) by this share of the way to the brightest


# Per-image geometry in NumPy: on one small image, torch's per-operation overhead costs several times the arithmetic
# (about 5x for a 28x28 digit), and serving prepares one image per request.
def border(grey: np.ndarray) -> np.ndarray:
    return np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])


def grey_of(image: torch.Tensor) -> np.ndarray:
    """The channel mean of a uint8 CxHxW image as float32 HxW (exact: a mean of at most 4 integers)."""
    pixels = image.numpy()
    return pixels[0].astype(np.float32) if pixels.shape[0] == 1 else pixels.mean(axis=0, dtype=np.float32)


def light_on_dark(image: torch.Tensor) -> torch.Tensor:
    """A uint8 CxHxW image inverted when its border is lighter than its mean (dark strokes on a light ground)."""
    grey = grey_of(image)
    edge = border(grey)
    return 255 - image if edge.sum(dtype=np.float64) / edge.size > grey.sum(dtype=np.float64) / grey.size else image


def lower_median(values: np.ndarray) -> float:
    """The lower of the two middle values for an even count, as torch.median."""
    middle = (values.size - 1) // 2
    return float(np.partition(values, middle)[middle])


def frame_ink(image: torch.Tensor, size: int) -> torch.Tensor:
    """A uint8 CxHxW image of light strokes as CxSxS: scaled so the ink's box fits INK_SHARE of S with its aspect
    kept, and moved so the ink's centre of mass is the centre (MNIST's own preparation of its digits). An SxS image
    whose box is already within a pixel of that size is left as it is."""
    grey = grey_of(image)
    background, peak = lower_median(border(grey)), float(grey.max())
    level = background + INK_LEVEL * (peak - background)
    rows, cols = np.nonzero(grey > level)
    if rows.size == 0:
        return to_square(image, size, "pad")
    extent = max(int(rows.max() - rows.min()), int(cols.max() - cols.min())) + 1
    if tuple(image.shape[-2:]) == (size, size) and abs(extent - size * INK_SHARE) <= 1:
        return image  # already framed (MNIST's own digits): shifting it by a rounded pixel would only lose detail
    scale = size * INK_SHARE / extent
    h, w = image.shape[-2:]
    image = TF.resize(image, [max(1, round(h * scale)), max(1, round(w * scale))], antialias=True)
    ink = np.clip(grey_of(image).astype(np.float64) - level, 0, None)
    mass = max(float(ink.sum()), 1e-6)
    cy = float(ink.sum(axis=1) @ np.arange(ink.shape[0])) / mass
    cx = float(ink.sum(axis=0) @ np.arange(ink.shape[1])) / mass
    top, left = round(size / 2 - 0.5 - cy), round(size / 2 - 0.5 - cx)
    canvas = torch.full((image.shape[0], size, size), round(background), dtype=image.dtype)
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(size, top + image.shape[-2]), min(size, left + image.shape[-1])
    if y1 > y0 and x1 > x0:
        canvas[:, y0:y1, x0:x1] = image[:, y0 - top : y1 - top, x0 - left : x1 - left]
    return canvas


def to_square(image: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """A uint8 CxHxW image as CxSxS with its aspect ratio kept: the short side resized to S and the long side
    centre-cropped (`crop`), the long side resized to S and the short side padded with black (`pad`), or the
    strokes framed (`ink`, see frame_ink)."""
    if mode == "ink":
        return frame_ink(image, size)
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
    polarity: str = "keep"

    def __call__(self, image: torch.Tensor, target: Any) -> tuple[torch.Tensor, Any]:
        if self.polarity == "auto":
            image = light_on_dark(image)
        image = to_square(image, self.size, self.mode)
        if self.augment is not None:
            image = self.augment(image)
        mean, std = self._normalization
        return (image.float() / 255.0 - mean) / std, target

    @cached_property
    def _normalization(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(self.mean).view(-1, 1, 1), torch.tensor(self.std).view(-1, 1, 1)


def normalization(model_cfg: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The model's (mean, std); unset (before the pipeline fitted them) pixels are only scaled to [0, 1]."""
    norm = model_cfg.normalize
    return ((0.0,), (1.0,)) if norm is None else (tuple(norm.mean), tuple(norm.std))


def denormalise(images: torch.Tensor, model_cfg: Any) -> torch.Tensor:
    """Model inputs back to [0, 1] pixels, for pictures."""
    mean, std = (torch.tensor(v).view(-1, 1, 1) for v in normalization(model_cfg))
    return (images * std + mean).clamp(0, 1)


class ClassifyCodec(Codec):
    reads = ("collect", "validation", "split", "model", "train")

    def decode(self, data: bytes) -> torch.Tensor:
        decode = decode_rgb if self.cfg.model.channels == 3 else decode_gray
        return decode(data, self.cfg.validation.max_side)

    def encode_target(self, label: Label) -> int:
        return list(self.cfg.collect.classes).index(label)

    def transform(self, train: bool) -> ImageTransform:
        m = self.cfg.model
        mean, std = normalization(m)
        return ImageTransform(m.input_size, m.resize, mean, std, self.augmentation() if train else None, m.polarity)

    def augmentation(self) -> v2.Compose | None:
        """train.augment's torchvision transforms, then model.augment's distortion families."""
        steps = [step.build() for step in self.cfg.train.augment]
        if any(p > 0 for p in self.cfg.model.augment.values()):
            steps.append(RandomDistortions(self.cfg.model.augment))
        return v2.Compose(steps) if steps else None

    def held_out_distortion(self) -> tuple[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] | None:
        """The distortion family split.robustness holds out of training, applied to a decoded test image."""
        family = self.cfg.split.robustness
        return None if family is None else (family, lambda image, generator: distort(image, family, generator))

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
