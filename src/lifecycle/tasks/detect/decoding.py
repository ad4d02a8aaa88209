"""detect's decoding: each image's objects from the heads' outputs (score floor, per-class non-maximum
suppression) and the class map painted from the foreground and those objects."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import batched_nms


@dataclass
class Detections:
    """One image's answered objects, in input pixels."""

    boxes: torch.Tensor  # K x 4
    scores: torch.Tensor  # K: centre score x class probability
    labels: torch.Tensor  # K class indices

    def above(self, min_score: float) -> Detections:
        """The objects scoring at least `min_score`: what `detections` would have kept with that floor (a box is
        only ever suppressed by a higher-scoring one, so raising the floor afterwards changes nothing else)."""
        keep = self.scores >= min_score
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep])


def detections(outputs: dict[str, torch.Tensor], min_score: float, nms_iou: float) -> list[Detections]:
    """Each image's decoded objects scoring at least `min_score`, after per-class non-maximum suppression."""
    probs = outputs["det_logits"].float().softmax(dim=-1)
    class_prob, labels = probs.max(dim=-1)
    scores = outputs["det_scores"].float() * class_prob
    found = []
    for boxes, score, label in zip(outputs["det_boxes"].float(), scores, labels, strict=True):
        keep = score >= min_score
        boxes, score, label = boxes[keep], score[keep], label[keep]
        kept = batched_nms(boxes, score, label, nms_iou)
        found.append(Detections(boxes[kept], score[kept], label[kept]))
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
