"""detect's inputs: any image as 8-bit RGB; its label as boxes, class indices and the class map (which a box-only
label lacks); batches that carry the true boxes for the classifier head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lifecycle.imaging import decode_rgb
from lifecycle.masks import label_class_map
from lifecycle.samples import Label
from lifecycle.tasks.detect.targets import DetectTransform
from lifecycle.tasks.parts import Codec
from lifecycle.zoo import detection_builders


class DetectCodec(Codec):
    reads = ("collect", "validation", "model", "train")

    def decode(self, data: bytes) -> torch.Tensor:
        return decode_rgb(data, self.cfg.validation.max_side)

    def encode_target(self, label: Label) -> dict[str, torch.Tensor]:
        classes = self.cfg.collect.classes
        target = {
            "boxes": torch.tensor(label["boxes"], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([classes.index(c) for c in label["labels"]], dtype=torch.long),
        }
        class_map = label_class_map(label, classes)
        if class_map is not None:
            return {**target, "mask": torch.from_numpy(class_map)}
        if self.cfg.model.masks:
            box_only = ", ".join(name for name, masks in detection_builders().items() if not masks)
            raise ValueError(
                f"detect.model.arch '{self.cfg.model.arch}' learns masks, and this image is labeled with boxes only: "
                "give every image a class map (masks/<stem>.png or each object's 'segmentation' in annotations.json) "
                f"or choose a box-only architecture ({box_only})"
            )
        return target

    def transform(self, train: bool) -> DetectTransform:
        augment = self.cfg.train.augmentation() if train else None
        return DetectTransform(self.cfg.model.input_size, augment)

    def batch_inputs(self, inputs: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {"images": torch.stack([x["image"] for x in inputs]), "sizes": torch.stack([x["size"] for x in inputs])}

    def collate(self, items: Sequence[tuple[Any, Any]]) -> tuple[dict[str, Any], list[dict[str, torch.Tensor]]]:
        """Training and evaluation batches also carry the true objects as an input: the built-in network's
        classifier head learns to name the objects at those boxes (teacher forcing), whatever the detector finds
        meanwhile; a torchvision detector takes them as its targets."""
        inputs, targets = zip(*items, strict=True)
        teacher: dict[str, Any] = {"boxes": [t["boxes"] for t in targets], "labels": [t["labels"] for t in targets]}
        if all("mask" in t for t in targets):
            teacher["class_map"] = torch.stack([t["mask"] for t in targets])
        return {**self.batch_inputs(inputs), **teacher}, list(targets)
