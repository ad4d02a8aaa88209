"""ocr's answer: each line's text and the probability of the decoded path (the sequence.Reader the text
metrics read through)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from lifecycle.sequence import greedy_ctc
from lifecycle.tasks.ocr.attention import greedy_attention
from lifecycle.tasks.ocr.codec import text_of
from lifecycle.tasks.parts import Outputs
from lifecycle.tasks.shared import scored


class OcrOutputs(Outputs):
    answer_schema: ClassVar[dict[str, Any]] = scored("text")
    reads = ("collect", "model")

    @property
    def charset(self) -> str:
        return self.cfg.collect.charset

    def text_of(self, target: torch.Tensor) -> str:
        return text_of(target, self.charset)

    def read(self, outputs: dict[str, torch.Tensor]) -> list[tuple[str, float]]:
        """Each line's text and the probability of the decoded path. The text's spaces are normalised as a
        label's are (none leading or trailing, one between words): paper beside the text reads as nothing."""
        decoded = greedy_ctc(outputs) if self.cfg.model.decoder == "ctc" else greedy_attention(outputs)
        return [
            (" ".join("".join(self.charset[c - 1] for c in chars).split()), confidence) for chars, confidence in decoded
        ]

    def predict(self, outputs: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        return [{"text": text, "confidence": confidence} for text, confidence in self.read(outputs)]
