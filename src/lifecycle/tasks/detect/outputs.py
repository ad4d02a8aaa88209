"""detect's answer: the objects (class, score, box in the image's pixels) and the class map, which the HTTP
answer includes on `?mask=true`; an image's confidence is its weakest object's score."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from lifecycle.masks import encode_class_map
from lifecycle.samples import InvalidInput
from lifecycle.tasks.detect.decoding import detections, paint
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
        m, classes = self.cfg.model, self.cfg.collect.classes
        answers = []
        for found, logits, (h, w) in zip(
            detections(outputs, m.score_threshold, m.nms_iou),
            outputs["foreground"],
            outputs["sizes"].tolist(),
            strict=True,
        ):
            scale = torch.tensor([w, h, w, h], dtype=torch.float32) / m.input_size
            foreground = F.interpolate(logits[None].float().cpu(), size=(h, w), mode="bilinear")[0, 0] > 0
            class_map = paint(foreground, found, scale)
            boxes = (found.boxes.cpu() * scale).clamp(min=0).minimum(torch.tensor([w, h, w, h], dtype=torch.float32))
            answers.append(
                {
                    "objects": [
                        {"label": classes[int(c)], "score": round(float(sc), 4), "box": [round(float(v), 1) for v in b]}
                        for b, sc, c in zip(boxes, found.scores, found.labels, strict=True)
                    ],
                    "mask": encode_class_map(class_map.numpy(), classes),
                }
            )
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
