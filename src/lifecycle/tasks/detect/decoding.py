"""detect's decoding: each image's objects from the model's outputs (score floor, per-class non-maximum
suppression) and the class map painted from the foreground and those objects, or from their instance masks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms


@dataclass
class Detections:
    """One image's answered objects, in input pixels."""

    boxes: torch.Tensor  # K x 4
    scores: torch.Tensor  # K: centre score x class probability
    labels: torch.Tensor  # K class indices
    masks: torch.Tensor | None = None  # K x H x W instance masks (uint8 probability x 255), from Mask R-CNN

    def above(self, min_score: float) -> Detections:
        """The objects scoring at least `min_score`: what `detections` would have kept with that floor (a box is
        only ever suppressed by a higher-scoring one, so raising the floor afterwards changes nothing else)."""
        keep = self.scores >= min_score
        masks = None if self.masks is None else self.masks[keep]
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep], masks)


def detections(outputs: dict[str, torch.Tensor], min_score: float, nms_iou: float) -> list[Detections]:
    """Each image's decoded objects scoring at least `min_score`, after per-class non-maximum suppression. The
    built-in network scores an object by its centre score x its class probability (`det_logits`); a torchvision
    detector gives scores and labels (`det_labels`) of its own."""
    if "det_logits" in outputs:
        class_prob, labels = outputs["det_logits"].float().softmax(dim=-1).max(dim=-1)
        scores = outputs["det_scores"].float() * class_prob
    else:
        scores, labels = outputs["det_scores"].float(), outputs["det_labels"]
    masks = outputs.get("det_masks")
    found = []
    for i, (boxes, score, label) in enumerate(zip(outputs["det_boxes"].float(), scores, labels, strict=True)):
        keep = torch.nonzero(score >= min_score).flatten()
        kept = keep[batched_nms(boxes[keep], score[keep], label[keep], nms_iou)]
        found.append(Detections(boxes[kept], score[kept], label[kept], None if masks is None else masks[i][kept]))
    return found


def paint(foreground: torch.Tensor, found: Detections, scale: torch.Tensor | None = None) -> torch.Tensor:
    """The class map (uint8 HxW, 0 background, k class k-1): each foreground pixel takes the class of the
    highest-scoring box it lies in (boxes grown by a pixel, as strokes may be cut by a slightly small box)."""
    h, w = foreground.shape
    class_map = torch.zeros(h, w, dtype=torch.uint8)
    boxes = found.boxes if scale is None else found.boxes * scale
    for i in found.scores.argsort().tolist():  # strongest last: it wins where boxes overlap
        x0, y0, x1, y1 = boxes[i].tolist()
        xa, ya = max(int(x0) - 1, 0), max(int(y0) - 1, 0)
        xb, yb = min(int(np.ceil(x1)) + 1, w), min(int(np.ceil(y1)) + 1, h)
        region = foreground[ya:yb, xa:xb]
        class_map[ya:yb, xa:xb][region] = int(found.labels[i]) + 1
    return class_map


def paint_instances(found: Detections, size: tuple[int, int] | None = None) -> torch.Tensor:
    """The class map (uint8 HxW, 0 background, k class k-1) from instance masks, resized to `size` (h, w) when
    given: each pixel a mask covers with probability over one half takes that object's class (strongest last)."""
    masks = cast(torch.Tensor, found.masks).float().cpu()
    if size is not None and tuple(masks.shape[-2:]) != size and len(masks):
        masks = F.interpolate(masks[None], size=size, mode="bilinear")[0]
    class_map = torch.zeros(size or masks.shape[-2:], dtype=torch.uint8)
    for i in found.scores.argsort().tolist():  # strongest last: it wins where masks overlap
        class_map[masks[i] > 127.5] = int(found.labels[i]) + 1
    return class_map
