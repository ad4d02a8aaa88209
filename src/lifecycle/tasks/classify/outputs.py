"""classify's answer: the label, its confidence and the top-k classes."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from lifecycle.tasks.parts import Outputs
from lifecycle.tasks.shared import scored


class ClassifyOutputs(Outputs):
    reads = ("collect",)
    top_k = 3
    answer_schema: ClassVar[dict[str, Any]] = {
        **scored("label"),
        "required": ["label", "confidence", "top_k"],
        "properties": {**scored("label")["properties"], "top_k": {"type": "array", "items": scored("label")}},
    }

    def predict(self, outputs: torch.Tensor) -> list[dict[str, Any]]:
        classes = self.cfg.collect.classes
        probs = outputs.float().softmax(dim=-1)
        conf, idx = probs.topk(min(self.top_k, probs.shape[-1]), dim=-1)
        return [
            {
                "label": classes[int(i[0])],
                "confidence": float(c[0]),
                "top_k": [{"label": classes[int(j)], "confidence": float(p)} for p, j in zip(c, i, strict=True)],
            }
            for c, i in zip(conf, idx, strict=True)
        ]
