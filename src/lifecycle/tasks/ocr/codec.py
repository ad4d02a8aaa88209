"""ocr's inputs: a line image as 8-bit grey, resized to the model's height with its width in proportion
(rounded to the encoder's stride, at most `model.max_width`), normalised per line; batches pad to the widest.
Targets are 1-based character indices (0 is the blank / end of text)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torchvision.transforms.v2 import functional as TF

from lifecycle.imaging import decode_gray
from lifecycle.samples import InvalidInput, Label
from lifecycle.sequence import STRIDE, pad_to_widest
from lifecycle.tasks.ocr.config import OcrModel
from lifecycle.tasks.parts import Codec


def resized_width(width: int, height: int, model_height: int) -> int:
    """A line's width at the model's height, aspect kept, rounded to the encoder stride (at least one frame)."""
    return max(STRIDE, round(width * model_height / height / STRIDE) * STRIDE)


def too_wide(width: int, height: int, model_cfg: OcrModel) -> str | None:
    """Why a line of `width` x `height` pixels is too wide for the model once resized, or None."""
    m = model_cfg
    if (resized := resized_width(width, height, m.height)) <= m.max_width:
        return None
    return (
        f"line too wide: {width}x{height} pixels would be {resized} pixels wide at height {m.height}, more "
        f"than the {m.max_width} the model reads; send shorter lines"
    )


@dataclass(frozen=True)
class LineTransform:
    """uint8 1xHxW line -> float 1 x height x W' (W' in proportion, a multiple of the stride), augmented when
    training, then normalised per line: centred on its median (the paper), scaled by its spread, and turned so
    ink is positive whether the text is dark on light or light on dark."""

    height: int
    augment: Any = None

    def __call__(self, image: torch.Tensor, target: Any) -> tuple[torch.Tensor, Any]:
        width = resized_width(image.shape[-1], image.shape[-2], self.height)  # decode bounds it by max_width
        image = TF.resize(image, [self.height, width], antialias=True)
        if self.augment is not None:
            image = self.augment(image)
        return normalise_line(image.float()), target


def normalise_line(image: torch.Tensor) -> torch.Tensor:
    median = image.median()
    polarity = 1.0 if float(image.mean()) >= float(median) else -1.0
    return (image - median) * polarity / (image.std() + 8.0)


def text_of(target: torch.Tensor, charset: str) -> str:
    """A target's text (the inverse of encoding it)."""
    return "".join(charset[int(c) - 1] for c in target)


class OcrCodec(Codec):
    reads = ("collect", "validation", "model", "train")

    @property
    def charset(self) -> str:
        return self.cfg.collect.charset

    def decode(self, data: bytes) -> torch.Tensor:
        image = decode_gray(data, self.cfg.validation.max_side)
        if problem := too_wide(image.shape[-1], image.shape[-2], self.cfg.model):
            raise InvalidInput(problem)
        return image

    def encode_target(self, label: Label) -> torch.Tensor:
        return torch.tensor([self.charset.index(c) + 1 for c in label], dtype=torch.long)

    def text_of(self, target: torch.Tensor) -> str:
        return text_of(target, self.charset)

    def transform(self, train: bool) -> LineTransform:
        m = self.cfg.model
        return LineTransform(m.height, self.cfg.train.augmentation() if train else None)

    def padded_size(self, raw_input: torch.Tensor) -> int:
        return resized_width(raw_input.shape[-1], raw_input.shape[-2], self.cfg.model.height)

    def batch_inputs(self, inputs: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Lines padded to the widest."""
        return pad_to_widest(inputs, self.cfg.model.height)

    def collate(self, items: Sequence[tuple[Any, Any]]) -> tuple[dict[str, Any], list[torch.Tensor]]:
        """Batches also carry the targets as an input: the attention decoder is teacher-forced in training."""
        inputs, targets = zip(*items, strict=True)
        return {**self.batch_inputs(inputs), "targets": list(targets)}, list(targets)
