"""detect's metrics: box mAP and, for architectures answering masks, the mean IoU of the answered class map, in one
torchmetrics Metric."""

from __future__ import annotations

from functools import cache

import torch

from lifecycle.tasks.detect.decoding import Detections, detections, paint, paint_instances


@cache
def detection_metrics() -> type:
    """The metric class, defined on first use: torchmetrics takes seconds to import."""
    from torchmetrics import Metric
    from torchmetrics.detection import MeanAveragePrecision
    from torchmetrics.segmentation import MeanIoU

    class DetectionMetrics(Metric):
        """Box mAP@0.5 and mAP@0.5:0.95 (COCO evaluation by pycocotools, over every decoded object down to a score
        of 0.01, as mAP expects) and, with `masks`, the mean IoU of the answered class map (background included, as
        in VOC)."""

        full_state_update = False

        def __init__(self, num_classes: int, score_threshold: float, nms_iou: float, masks: bool = True) -> None:
            super().__init__()
            self.score_threshold, self.nms_iou, self.masks = score_threshold, nms_iou, masks
            self.boxes = MeanAveragePrecision(
                box_format="xyxy", iou_type="bbox", backend="pycocotools", class_metrics=True
            )
            self.iou = MeanIoU(
                num_classes=num_classes + 1, include_background=True, per_class=True, input_format="index"
            )

        def update(self, outputs: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> None:
            ranked = detections(outputs, 0.01, self.nms_iou)
            self.boxes.update(
                [{"boxes": d.boxes, "scores": d.scores, "labels": d.labels} for d in ranked],
                [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets],
            )
            if self.masks:
                maps = [self._class_map(outputs, i, found) for i, found in enumerate(ranked)]
                self.iou.update(torch.stack(maps).long(), torch.stack([t["mask"] for t in targets]).cpu())

        def _class_map(self, outputs: dict[str, torch.Tensor], i: int, found: Detections) -> torch.Tensor:
            answered = found.above(self.score_threshold)
            if "foreground" not in outputs:  # instance masks
                return paint_instances(answered)
            return paint(outputs["foreground"][i, 0].float().cpu() > 0, answered)

        def compute(self) -> dict[str, torch.Tensor]:
            boxes = self.boxes.compute()
            absent = torch.tensor(float("nan"))
            iou = self.iou.compute() if self.masks else None  # -1 for a class in neither answers nor truth: no score
            values = {"map_50": boxes["map_50"], "map": boxes["map"]}
            if iou is not None:
                values["mean_iou"] = iou[iou >= 0].mean()
            values["per_class_map"] = torch.where(boxes["map_per_class"] >= 0, boxes["map_per_class"], absent)
            if iou is not None:
                values["per_class_iou"] = torch.where(iou[1:] >= 0, iou[1:], absent)
            return values

        def reset(self) -> None:
            super().reset()
            self.boxes.reset()
            self.iou.reset()

    return DetectionMetrics
