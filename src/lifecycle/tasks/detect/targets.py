"""detect's transform: images resized and normalised, boxes and masks moved with the pixels, and the CenterNet
targets the heads learn from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

MEAN, STD = 127.5, 64.0
STRIDE = 4  # the built-in network's detection grid: one cell per 4x4 input pixels


@dataclass(frozen=True)
class DetectTransform:
    """(uint8 3xHxW image, target) -> (normalised input_size image and its original size, target resized, augmented
    and encoded for the heads). Boxes and masks are tv_tensors, so every v2 augmentation moves them with the pixels."""

    size: int
    augment: v2.Compose | None = None

    def __call__(self, image: torch.Tensor, target: dict[str, Any] | None) -> tuple[dict[str, torch.Tensor], Any]:
        original = torch.tensor(image.shape[-2:])
        image = tv_tensors.Image(image)
        if target is None:
            image = TF.resize(image, [self.size, self.size], antialias=True)
            return {"image": _normalise(image), "size": original}, None
        boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=tuple(image.shape[-2:]))
        sample = {"image": image, "boxes": boxes, "labels": target["labels"]}
        if "mask" in target:  # a box-only label has none
            sample["mask"] = tv_tensors.Mask(target["mask"])
        sample = v2.Resize([self.size, self.size], antialias=True)(sample)
        if self.augment is not None:
            sample = self.augment(sample)
        # boxes pushed off the canvas go, with their labels (the class map is not per-box: it stays as it is)
        kept = v2.SanitizeBoundingBoxes(min_size=1.0)(
            v2.ClampBoundingBoxes()({"boxes": sample["boxes"], "labels": sample["labels"]})
        )
        encoded = {
            "boxes": kept["boxes"].as_subclass(torch.Tensor).float(),
            "labels": kept["labels"],
            **({"mask": sample["mask"].as_subclass(torch.Tensor).long()} if "mask" in sample else {}),
            **encode_centres(kept["boxes"].as_subclass(torch.Tensor), self.size),
        }
        return {"image": _normalise(sample["image"]), "size": original}, encoded


def _normalise(image: torch.Tensor) -> torch.Tensor:
    return (image.as_subclass(torch.Tensor).float() - MEAN) / STD


def denormalise(image: torch.Tensor) -> torch.Tensor:
    """A model input back to a uint8 3xHxW image, for pictures."""
    return (image * STD + MEAN).clamp(0, 255).to(torch.uint8)


def encode_centres(boxes: torch.Tensor, size: int) -> dict[str, torch.Tensor]:
    """CenterNet targets on the stride-4 grid: a Gaussian peak of 1 at each box centre's cell, and at that cell
    the box size (in cells) and the centre's offset within the cell."""
    cells = size // STRIDE
    heatmap = torch.zeros(1, cells, cells)
    box = torch.zeros(4, cells, cells)
    at_centre = torch.zeros(cells, cells, dtype=torch.bool)
    ys, xs = torch.arange(cells).view(-1, 1).float(), torch.arange(cells).view(1, -1).float()
    for x0, y0, x1, y1 in (boxes / STRIDE).tolist():
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        ix, iy = min(int(cx), cells - 1), min(int(cy), cells - 1)
        sx, sy = max((x1 - x0) / 6, 0.5), max((y1 - y0) / 6, 0.5)
        peak = torch.exp(-((xs - ix) ** 2) / (2 * sx**2) - ((ys - iy) ** 2) / (2 * sy**2))
        heatmap[0] = torch.maximum(heatmap[0], peak)
        box[:, iy, ix] = torch.tensor([x1 - x0, y1 - y0, cx - ix, cy - iy])
        at_centre[iy, ix] = True
    return {"heatmap": heatmap, "box_target": box, "at_centre": at_centre}
