"""detect's answer: the objects (class, score, box in the image's pixels) and, for architectures answering masks, the
class map, which the HTTP answer includes on `?mask=true`; an image's confidence is its weakest object's score."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from lifecycle.masks import encode_class_map
from lifecycle.samples import InvalidInput
from lifecycle.tasks.detect.decoding import Detections, detections, paint, paint_instances
from lifecycle.tasks.parts import Outputs


class DetectOutputs(Outputs):
    reads = ("collect", "model")
    answer_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["objects"],
        "properties": {
            "objects": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["label", "score", "box"],
                    "properties": {
                        "label": {"type": "string"},
                        "score": {"type": "number"},
                        "box": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
                    },
                },
            },
            "mask": {
                "type": "object",
                "description": "the class map, run-length encoded (lifecycle.masks); only with ?mask=true",
                "required": ["size", "counts", "classes"],
            },
        },
    }
    query_schema: ClassVar[dict[str, dict[str, Any]]] = {
        "mask": {"type": "string", "enum": ["true", "false", "1", "0"], "default": "false"}
    }

    def predict(self, outputs: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """Each image's objects, and its class map (`mask`) where the architecture answers masks, else its size
        (`size`: [h, w], for what places boxes on the image, such as Label Studio's pre-annotations)."""
        m, classes = self.cfg.model, self.cfg.collect.classes
        answers = []
        for i, (found, (h, w)) in enumerate(
            zip(detections(outputs, m.score_threshold, m.nms_iou), outputs["sizes"].tolist(), strict=True)
        ):
            scale = torch.tensor([w, h, w, h], dtype=torch.float32) / m.input_size
            boxes = (found.boxes.cpu() * scale).clamp(min=0).minimum(torch.tensor([w, h, w, h], dtype=torch.float32))
            answer: dict[str, Any] = {
                "objects": [
                    {"label": classes[int(c)], "score": round(float(sc), 4), "box": [round(float(v), 1) for v in b]}
                    for b, sc, c in zip(boxes, found.scores, found.labels, strict=True)
                ]
            }
            if m.masks:
                answer["mask"] = encode_class_map(self._class_map(outputs, i, found, (h, w)).numpy(), classes)
            else:
                answer["size"] = [h, w]
            answers.append(answer)
        return answers

    def _class_map(
        self, outputs: dict[str, torch.Tensor], i: int, found: Detections, size: tuple[int, int]
    ) -> torch.Tensor:
        if "foreground" not in outputs:  # instance masks
            return paint_instances(found, size)
        scale = torch.tensor([size[1], size[0], size[1], size[0]], dtype=torch.float32) / self.cfg.model.input_size
        foreground = F.interpolate(outputs["foreground"][i][None].float().cpu(), size=size, mode="bilinear")[0, 0] > 0
        return paint(foreground, found, scale)

    def answer(self, prediction: dict[str, Any], options: dict[str, str]) -> dict[str, Any]:
        """`?mask=true` adds the class map; without it the answer is the objects only. An architecture answering
        boxes only refuses `?mask=true` (400)."""
        unknown = sorted(set(options) - {"mask"})
        if unknown:
            raise InvalidInput(f"unknown query parameter(s) {unknown}; /detect takes mask=true|false")
        flag = options.get("mask", "false").lower()
        if flag not in ("true", "false", "1", "0"):
            raise InvalidInput(f"mask must be true or false, got {options['mask']!r}")
        if flag in ("true", "1") and not self.cfg.model.masks:
            raise InvalidInput(
                f"mask=true: this model ({self.cfg.model.arch}) answers boxes only; ask without mask, or serve an "
                "architecture with masks"
            )
        return prediction if flag in ("true", "1") else {"objects": prediction["objects"]}

    def confidence(self, prediction: dict[str, Any]) -> float:
        """The weakest answered object's score: an image is as sure as its least sure object (0 with none)."""
        return min((o["score"] for o in prediction["objects"]), default=0.0)
