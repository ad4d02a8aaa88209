"""detect's pictures: test scenes with the truth beside the answer, and augmented training scenes, each drawn
with its boxes, class names and class map."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lifecycle.figures import save_image_grid
from lifecycle.masks import label_class_map
from lifecycle.samples import Label
from lifecycle.tasks.detect.targets import denormalise
from lifecycle.tasks.parts import Codec, Reports


class DetectReports(Reports):
    reads = ("collect",)

    def __init__(self, cfg: Any, codec: Codec) -> None:
        super().__init__(cfg)
        self.codec = codec

    def report(
        self,
        predictions: list[dict[str, Any]],
        labels: list[Label],
        inputs: Sequence[Path],
        out_dir: Path,
        model: nn.Module | None = None,
        shown: int = 8,
    ) -> dict[str, Any]:
        """`test_scenes.png`: the first test scenes, the truth beside the answer (boxes, scores and class map)."""
        classes = self.cfg.collect.classes
        pictures = []
        for prediction, label, path in list(zip(predictions, labels, inputs, strict=True))[:shown]:
            image = self.codec.decode(path.read_bytes())
            pictures.append(
                draw(
                    image,
                    torch.tensor(label["boxes"], dtype=torch.float32).reshape(-1, 4),
                    [classes.index(c) for c in label["labels"]],
                    label_class_map(label, classes),  # None for a box-only label
                    classes,
                )
            )
            objects = prediction["objects"]
            pictures.append(
                draw(
                    image,
                    torch.tensor([o["box"] for o in objects], dtype=torch.float32).reshape(-1, 4),
                    [classes.index(o["label"]) for o in objects],
                    label_class_map(prediction, classes),  # None from an architecture answering boxes only
                    classes,
                    [o["score"] for o in objects],
                )
            )
        save_grid(pictures, out_dir / "test_scenes.png", "Test scenes: truth (left) and the model's answer (right)")
        return {}

    def preview(self, samples: Sequence[tuple[Any, Any]], path: Path) -> None:
        classes = self.cfg.collect.classes
        images = [denormalise(x["image"]) for x, _ in samples]
        drawn = [
            draw(img, t["boxes"], t["labels"].tolist(), t.get("mask"), classes)
            for img, (_, t) in zip(images, samples, strict=True)
        ]
        save_grid(drawn, path, "Augmented training scenes with their boxes and masks")


def draw(
    image: torch.Tensor,
    boxes: torch.Tensor,
    labels: Sequence[int],
    class_map: torch.Tensor | np.ndarray | None,
    classes: Sequence[str],
    scores: Sequence[float] | None = None,
) -> torch.Tensor:
    """A uint8 3xHxW image with the class map (None: none, a box-only label or answer) tinted over it and the boxes
    drawn with their class names (and scores), one colour per class."""
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    palette = [tuple(int(255 * v) for v in _colour(k, len(classes))) for k in range(len(classes))]
    class_map = None if class_map is None else torch.as_tensor(class_map)
    if class_map is not None and (present := [k for k in range(1, len(classes) + 1) if (class_map == k).any()]):
        masks = torch.stack([class_map == k for k in present])
        image = draw_segmentation_masks(image, masks, alpha=0.45, colors=[palette[k - 1] for k in present])
    if len(boxes):
        names = [classes[k] for k in labels]
        captions = [f"{n} {s:.2f}" for n, s in zip(names, scores, strict=True)] if scores is not None else names
        image = draw_bounding_boxes(image, boxes.round(), captions, colors=[palette[k] for k in labels], width=1)
    return image


def _colour(k: int, n: int) -> tuple[float, float, float]:
    import colorsys

    return colorsys.hsv_to_rgb(k / max(n, 1), 0.9, 1.0)


def save_grid(images: Sequence[torch.Tensor], path: Path, title: str) -> None:
    """The images in rows of four, each padded with white to the largest's size (your own images vary in size)."""
    import torch.nn.functional as F
    from torchvision.utils import make_grid

    height, width = max(i.shape[-2] for i in images), max(i.shape[-1] for i in images)
    padded = [F.pad(i, (0, width - i.shape[-1], 0, height - i.shape[-2]), value=255) for i in images]
    save_image_grid(make_grid(padded, nrow=4, padding=4, pad_value=255), path, title)
