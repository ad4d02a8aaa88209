"""detect's model: DetectNet, a small U-Net whose heads find objects (class-agnostic CenterNet heads), mark their
pixels (a foreground head) and name them (a classifier over each object's crop of the foreground, via RoIAlign), or
a torchvision detector (`model.arch`); the loss and the metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from lifecycle.nets import conv_block
from lifecycle.tasks.detect.losses import focal_loss, soft_dice_loss
from lifecycle.tasks.detect.metrics import detection_metrics
from lifecycle.tasks.detect.targets import STRIDE
from lifecycle.tasks.detect.torchvision_models import TorchvisionDetector, targets_of, torchvision_detector
from lifecycle.tasks.parts import Forward, Network
from lifecycle.weights import load_initial
from lifecycle.zoo import BUILTIN

if TYPE_CHECKING:  # torchmetrics takes seconds to import; stages that never compute metrics skip it
    from torchmetrics import MetricCollection

CROP = 28  # the classifier sees each object as MNIST does: 28x28, the object's longer side ~20 pixels
CROP_MARGIN = 1.4
CROP_VIEWS = 2
CLASSIFIER_WIDTH = 16  # enough for 28x28 digits (the classify task's model is this size), and cheap per object


class Up(nn.Module):
    """Upsample x2, concatenate the encoder's features of that scale, convolve."""

    def __init__(self, c_low: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.block = nn.Sequential(conv_block(c_low + c_skip, c_out), conv_block(c_out, c_out))

    def forward(self, low: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([F.interpolate(low, scale_factor=2.0, mode="nearest"), skip], dim=1))


def square_boxes(boxes: torch.Tensor, jitter: float = 0.0) -> torch.Tensor:
    """Squares around the boxes' centres, side CROP_MARGIN x the longer side (randomly moved and scaled by up
    to `jitter` of it when training, so the classifier tolerates imperfect predicted boxes)."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = (boxes[:, 2:] - boxes[:, :2]).amax(dim=1, keepdim=True).clamp(min=1) * CROP_MARGIN
    if jitter:
        centre = centre + (torch.rand_like(centre) * 2 - 1) * jitter * side
        side = side * (1 + (torch.rand_like(side) * 2 - 1) * jitter)
    return torch.cat([centre - side / 2, centre + side / 2], dim=1)


class DetectNet(nn.Module):
    """A small U-Net with three heads. At stride 4, class-agnostic CenterNet heads find objects (a centre heatmap,
    box sizes and sub-cell offsets); at full resolution, a foreground head says which pixels belong to an object
    (predicted per 2x2 block from stride 2 by pixel shuffle, so no full-resolution convolution is paid for); a
    small classifier names each object from its crop of the foreground map (RoIAlign), the way MNIST presents a
    digit. The class map is the foreground painted with the classes of the boxes it lies in.

    Training passes the true boxes (`gt_boxes`) for the classifier; in eval mode the top `max_objects` heatmap
    peaks are decoded and classified, in fixed-size tensors (padded with score 0), so outputs batch and travel
    between processes like any tensor."""

    def __init__(self, num_classes: int, width: int = 16, max_objects: int = 30) -> None:
        super().__init__()
        w = width
        self.max_objects = max_objects
        self.enc2 = nn.Sequential(conv_block(3, w, 2), conv_block(w, w))
        self.enc4 = nn.Sequential(conv_block(w, 2 * w, 2), conv_block(2 * w, 2 * w))
        self.enc8 = nn.Sequential(conv_block(2 * w, 4 * w, 2), conv_block(4 * w, 4 * w))
        self.enc16 = nn.Sequential(conv_block(4 * w, 8 * w, 2), conv_block(8 * w, 8 * w))
        self.up8 = Up(8 * w, 4 * w, 4 * w)
        self.up4 = Up(4 * w, 2 * w, 2 * w)
        self.up2 = Up(2 * w, w, w)
        self.det = conv_block(2 * w, 2 * w)
        self.heatmap = nn.Conv2d(2 * w, 1, 1)
        self.box = nn.Conv2d(2 * w, 4, 1)  # width, height (in cells), centre offset x, y (within the cell)
        self.foreground = nn.Conv2d(w, 4 * 4, 1)  # per pixel of each 2x2 block: weights for R, G, B and a bias
        c = CLASSIFIER_WIDTH
        self.classifier = nn.Sequential(
            conv_block(1, c),
            nn.MaxPool2d(2),
            conv_block(c, 2 * c),
            conv_block(2 * c, 2 * c),
            nn.MaxPool2d(2),
            conv_block(2 * c, 4 * c),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4 * c, num_classes),
        )
        # start at p = 0.01 (focal loss on a mostly empty heatmap)
        nn.init.constant_(cast(torch.Tensor, self.heatmap.bias), -4.6)
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # valid at runtime, missing from torch's stubs

    def forward(
        self,
        images: torch.Tensor,
        gt_boxes: list[torch.Tensor] | None = None,
        gt_foreground: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        return self.forward_features(images, gt_boxes, gt_foreground)[0]

    def forward_features(
        self,
        images: torch.Tensor,
        gt_boxes: list[torch.Tensor] | None = None,
        gt_foreground: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        x2 = self.enc2(images.contiguous(memory_format=torch.channels_last))
        x4 = self.enc4(x2)
        x8 = self.enc8(x4)
        x16 = self.enc16(x8)
        d4 = self.up4(self.up8(x16, x8), x4)
        det = self.det(d4)
        outputs = {
            "heatmap": self.heatmap(det),
            "box": self.box(det),
            "foreground": pixel_logits(F.pixel_shuffle(self.foreground(self.up2(d4, x2)), 2), images),
        }
        foreground = outputs["foreground"].detach().float().sigmoid()
        if gt_boxes is not None and cast(int, sum(len(b) for b in gt_boxes)):
            # in training each true box is seen CROP_VIEWS times, moved and scaled a little: the classifier is
            # cheap next to the U-Net, and it learns to tolerate predicted boxes
            views = CROP_VIEWS if self.training else 1
            seen = foreground
            if self.training and gt_foreground is not None:  # half the images show the classifier the true mask
                truth = torch.rand(len(images), 1, 1, 1, device=images.device) < 0.5
                seen = torch.where(truth, gt_foreground.unsqueeze(1).float(), foreground)
            outputs["gt_logits"] = self.classify(
                seen, [b.repeat(views, 1) for b in gt_boxes], jitter=0.1 if self.training else 0.0
            )
        if not self.training:
            boxes, scores = top_centres(outputs, self.max_objects)
            outputs["det_boxes"], outputs["det_scores"] = boxes, scores
            outputs["det_logits"] = self.classify(foreground, list(boxes)).view(*scores.shape, -1)
        return outputs, x16.mean(dim=(2, 3))

    def classify(self, foreground: torch.Tensor, boxes: list[torch.Tensor], jitter: float = 0.0) -> torch.Tensor:
        from torchvision.ops import roi_align

        squares = [square_boxes(b.float(), jitter) for b in boxes]
        crops = roi_align(foreground, squares, output_size=CROP, spatial_scale=1.0, sampling_ratio=2, aligned=True)
        return self.classifier(crops.contiguous(memory_format=torch.channels_last))


def pixel_logits(plane: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Foreground logits, one per pixel: a linear function of the pixel's own colour whose weights the context
    (stride-2 features, pixel-shuffled) chooses. The context knows the colours of the stroke and of the background
    around it; the pixel's value then places the stroke's edge exactly, without full-resolution convolutions."""
    return (plane[:, :3] * images.float()).sum(dim=1, keepdim=True) + plane[:, 3:]


def top_centres(outputs: dict[str, torch.Tensor], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k strongest heatmap peaks (3x3 local maxima) of each image: boxes N x k x 4 (XYXY, input pixels) and
    scores N x k."""
    heat = outputs["heatmap"].float().sigmoid()
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    n, _, h, w = heat.shape
    scores, cell = peaks.flatten(1).topk(min(k, h * w), dim=1)
    box = outputs["box"].float().flatten(2).gather(2, cell.unsqueeze(1).expand(-1, 4, -1))  # n x 4 x k
    cx = ((cell % w).float() + box[:, 2]) * STRIDE
    cy = ((cell // w).float() + box[:, 3]) * STRIDE
    bw, bh = box[:, 0].clamp(min=0) * STRIDE, box[:, 1].clamp(min=0) * STRIDE
    return torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=-1), scores


class DetectNetwork(Network):
    reads = ("collect", "model")

    def build(self) -> nn.Module:
        m, n = self.cfg.model, len(self.cfg.collect.classes)
        if m.arch == BUILTIN:
            return DetectNet(n, m.width, m.max_objects)
        return torchvision_detector(m.arch, n, m.input_size, m.nms_iou, m.max_objects, m.builder_args)

    def pretrained(self, keep_head: bool = False) -> tuple[nn.Module, dict[str, Any]]:
        model = self.build()
        if self.cfg.model.weights is None:
            return model, {}
        if isinstance(model, TorchvisionDetector):
            target, head = model.net, model.head
        else:
            target, head = model, "classifier."  # its last layer names the classes
        return model, load_initial(target, self.cfg.model.weights, None if keep_head else head)

    def head_prefix(self, model: nn.Module) -> str | None:
        return f"net.{model.head}" if isinstance(model, TorchvisionDetector) else None

    def forward(self, model: nn.Module, inputs: dict[str, Any]) -> Forward:
        if isinstance(model, TorchvisionDetector):
            targets = targets_of(inputs, self.cfg.model.masks)
            outputs, features = model.forward_features(inputs["images"], targets)
        else:
            class_map = inputs.get("class_map")
            foreground = None if class_map is None else class_map > 0
            outputs, features = cast(DetectNet, model).forward_features(
                inputs["images"], inputs.get("boxes"), foreground
            )
        return Forward({**outputs, "sizes": inputs["sizes"]}, features)

    def loss(self, outputs: dict[str, Any], targets: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        if "losses" in outputs:  # a torchvision detector's own loss terms
            return cast(torch.Tensor, sum(value.float() for value in outputs["losses"].values()))
        m = self.cfg.model
        heatmap = torch.stack([t["heatmap"] for t in targets])
        box_target = torch.stack([t["box_target"] for t in targets])
        at_centre = torch.stack([t["at_centre"] for t in targets]).unsqueeze(1).float()
        box = outputs["box"].float()
        size_l1 = (F.l1_loss(box[:, :2], box_target[:, :2], reduction="none") * at_centre).sum()
        offset_l1 = (F.l1_loss(box[:, 2:], box_target[:, 2:], reduction="none") * at_centre).sum()
        objects = at_centre.sum().clamp(min=1)
        foreground = torch.stack([t["mask"] for t in targets]).gt(0).float().unsqueeze(1)
        logits = outputs["foreground"].float()
        mask = F.binary_cross_entropy_with_logits(logits, foreground) + soft_dice_loss(logits, foreground)
        total = focal_loss(outputs["heatmap"].float(), heatmap) + (m.size_loss_weight * size_l1 + offset_l1) / objects
        total = total + m.mask_loss_weight * mask
        if "gt_logits" in outputs:
            views = len(outputs["gt_logits"]) // sum(len(t["labels"]) for t in targets)  # as DetectNet repeats boxes
            labels = torch.cat([t["labels"].repeat(views) for t in targets])
            total = total + m.class_loss_weight * F.cross_entropy(
                outputs["gt_logits"].float(), labels, label_smoothing=m.label_smoothing
            )
        return total

    def metrics(self) -> MetricCollection:
        from torchmetrics import MetricCollection

        m = self.cfg.model
        metric = detection_metrics()(len(self.cfg.collect.classes), m.score_threshold, m.nms_iou, m.masks)
        return MetricCollection({"detection": metric})
