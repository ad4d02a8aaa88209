"""detect's torchvision detectors (Faster R-CNN, Mask R-CNN, RetinaNet, FCOS, SSD) behind the pipeline's network
interface: they take the pipeline's batches (normalised input_size² images, the true objects alongside when
training or evaluating) and give a loss dict and detections padded to fixed-size tensors like the built-in
network's, so that the trainer, metrics, outputs and serving need no special case.

torchvision's detectors count the background as class 0: the task's class k is the detector's k + 1."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, cast

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from lifecycle.tasks.detect.targets import MEAN, STD
from lifecycle.zoo import build_detector


class TorchvisionDetector(nn.Module):
    """A torchvision detector `net` whose class-dependent layers are under `head` (a prefix of its state dict)."""

    def __init__(self, net: nn.Module, head: str, max_objects: int) -> None:
        super().__init__()
        self.net, self.head, self.max_objects = net, head, max_objects

    def forward(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None) -> dict[str, Any]:
        return self.forward_features(images, targets)[0]

    def forward_features(
        self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None
    ) -> tuple[dict[str, Any], torch.Tensor]:
        """Training: {"losses": the detector's loss dict}. Evaluation: the detections padded to `max_objects`
        (`det_boxes`, `det_scores`, `det_labels`, `det_masks` for Mask R-CNN), and with `targets` also the losses
        (the validation loss). Features: the backbone's last feature map, pooled to one vector per image."""
        pixels = list((images.float() * STD + MEAN) / 255)  # the [0, 1] RGB torchvision's transforms normalise
        seen: list[Any] = []
        backbone = cast(nn.Module, self.net.backbone)
        hook = backbone.register_forward_hook(lambda _m, _args, out: seen.append(out))
        outputs: dict[str, Any] = {}
        try:
            if self.training:
                outputs["losses"] = self.net(pixels, targets)
            else:
                outputs |= padded(self.net(pixels), self.max_objects)
                if targets is not None:
                    outputs["losses"] = self._losses_in_eval(pixels, targets)
        finally:
            hook.remove()
        features = seen[0]
        last = list(features.values())[-1] if isinstance(features, OrderedDict) else features
        return outputs, last.float().mean(dim=(2, 3))

    def _losses_in_eval(self, pixels: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        """The training losses of an evaluation batch (torchvision computes losses in training mode only), the norm
        layers' running statistics left as they are."""
        self.net.train()
        for module in self.net.modules():
            if isinstance(module, _BatchNorm):
                module.eval()
        try:
            return self.net(pixels, targets)
        finally:
            self.net.eval()


HEADS = {"fasterrcnn": "roi_heads.", "maskrcnn": "roi_heads.", "retinanet": "head.", "fcos": "head.", "ssd": "head."}


def torchvision_detector(
    arch: str, num_classes: int, input_size: int, nms_iou: float, max_objects: int, extra: dict[str, Any]
) -> TorchvisionDetector:
    net = build_detector(arch, num_classes + 1, input_size, nms_iou, max_objects, extra)
    head = next(prefix for family, prefix in HEADS.items() if arch.startswith(family))
    return TorchvisionDetector(net, head, max_objects)


def targets_of(inputs: dict[str, Any], masks: bool) -> list[dict[str, torch.Tensor]] | None:
    """torchvision's targets from the true objects a training or evaluation batch carries (None when serving):
    boxes, labels shifted past the background, and for Mask R-CNN each object's mask (its class's pixels of the
    class map inside its box)."""
    if "labels" not in inputs:
        return None
    targets = []
    for i, (boxes, labels) in enumerate(zip(inputs["boxes"], inputs["labels"], strict=True)):
        target = {"boxes": boxes.float(), "labels": labels + 1}
        if masks:
            target["masks"] = instance_masks(inputs["class_map"][i], boxes, labels)
        targets.append(target)
    return targets


def instance_masks(class_map: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """K x H x W uint8: the pixels of each object's class inside its box (grown by a pixel: a box may cut its
    object's edge). Exact for objects that do not overlap, as the class map has no instances."""
    h, w = class_map.shape
    masks = torch.zeros(len(boxes), h, w, dtype=torch.uint8, device=class_map.device)
    for k, ((x0, y0, x1, y1), label) in enumerate(zip(boxes.tolist(), labels.tolist(), strict=True)):
        xa, ya, xb, yb = max(int(x0) - 1, 0), max(int(y0) - 1, 0), min(int(x1) + 2, w), min(int(y1) + 2, h)
        masks[k, ya:yb, xa:xb] = class_map[ya:yb, xa:xb] == label + 1
    return masks


def padded(found: list[dict[str, torch.Tensor]], k: int) -> dict[str, torch.Tensor]:
    """torchvision's detections (one dict per image, any count) as N x k tensors, padded with score 0: boxes in
    input pixels, scores, the task's class indices and, for Mask R-CNN, the masks (probability x 255, uint8)."""
    n = len(found)
    device = found[0]["boxes"].device if found else torch.device("cpu")
    boxes = torch.zeros(n, k, 4, device=device)
    scores = torch.zeros(n, k, device=device)
    labels = torch.zeros(n, k, dtype=torch.long, device=device)
    out = {"det_boxes": boxes, "det_scores": scores, "det_labels": labels}
    with_masks = bool(found) and "masks" in found[0]
    if with_masks:
        out["det_masks"] = torch.zeros(n, k, *found[0]["masks"].shape[-2:], dtype=torch.uint8, device=device)
    for i, image in enumerate(found):
        own = torch.nonzero(image["labels"] > 0).flatten()[:k]  # a dense head may name the background
        m = len(own)
        boxes[i, :m] = image["boxes"][own].float()
        scores[i, :m] = image["scores"][own].float()
        labels[i, :m] = image["labels"][own] - 1
        if with_masks:
            out["det_masks"][i, :m] = (image["masks"][own, 0].float() * 255).round().to(torch.uint8)
    return out
