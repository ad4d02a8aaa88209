"""asr's answer: the transcript of the best CTC path and its confidence; a recording's transcript growing
window by window (`lifecycle transcribe --stream`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from lifecycle.tasks.asr.codec import AsrCodec
from lifecycle.tasks.asr.decoding import transcript
from lifecycle.tasks.asr.streaming import file_chunks, transcribe_stream
from lifecycle.tasks.parts import Outputs
from lifecycle.tasks.shared import scored


class AsrOutputs(Outputs):
    """Also the text metrics' reader (`read`, `text_of`) and a StreamingOutputs (`stream_file`)."""

    answer_schema: ClassVar[dict[str, Any]] = scored("text")
    reads = ("model",)

    def __init__(self, cfg: Any, codec: AsrCodec) -> None:
        super().__init__(cfg)
        self.codec = codec

    def read(self, outputs: dict[str, torch.Tensor]) -> list[tuple[str, float]]:
        best, index = outputs["logits"].float().softmax(-1).max(-1)
        return [
            self.transcript(index[i, :n].tolist(), best[i, :n].tolist())
            for i, n in enumerate(outputs["lengths"].tolist())
        ]

    def text_of(self, target: torch.Tensor) -> str:
        return self.codec.text_of(target)

    def transcript(self, path: list[int], probs: list[float]) -> tuple[str, float]:
        """A clip's transcript from its best CTC path (repeats collapsed, blanks dropped, then each word mapped
        into the vocabulary when so configured) and its confidence (`emitted_confidence`)."""
        vocabulary = self.codec.vocabulary if self.cfg.model.constrain_to_vocabulary else None
        return transcript(path, probs, self.codec.charset, vocabulary)

    def predict(self, outputs: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        return [{"text": text, "confidence": confidence} for text, confidence in self.read(outputs)]

    def stream_file(self, model: nn.Module, path: Path) -> Iterator[tuple[float, str]]:
        """(seconds decoded so far, transcript so far) after each window of the audio file at `path`, read a
        window at a time."""
        yield from transcribe_stream(self, model, file_chunks(path, self.codec.features, self.cfg.model.streaming))
