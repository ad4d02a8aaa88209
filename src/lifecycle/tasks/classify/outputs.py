"""classify's answer: the label, its confidence and the top-k classes."""

from __future__ import annotations

from typing import Any

import torch

from lifecycle.tasks.parts import Outputs


class ClassifyOutputs(Outputs):
    reads = ("collect",)
    top_k = 3

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
