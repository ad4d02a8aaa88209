"""asr's answer: a clip's transcript (the vocabulary words the lexicon search finds, or the best CTC path's
letters) and its confidence; a recording's transcript growing window by window (`lifecycle transcribe --stream`)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from lifecycle.tasks.asr.codec import AsrCodec
from lifecycle.tasks.asr.decoding import transcript
from lifecycle.tasks.asr.lexicon import LexiconSearch, WordLoop, read_batch, word_loop
from lifecycle.tasks.asr.streaming import StreamDecoder, file_chunks, transcribe_stream
from lifecycle.tasks.parts import Outputs
from lifecycle.tasks.shared import scored


class AsrOutputs(Outputs):
    """Also the text metrics' reader (`read`, `text_of`) and a StreamingOutputs (`stream_file`)."""

    answer_schema: ClassVar[dict[str, Any]] = scored("text")
    reads = ("model",)

    def __init__(self, cfg: Any, codec: AsrCodec) -> None:
        super().__init__(cfg)
        self.codec = codec

    @cached_property
    def lexicon(self) -> WordLoop | None:
        """The vocabulary's search graph, when transcripts are searched among vocabulary words."""
        model = self.cfg.model
        if model.constrain_to_vocabulary and model.vocabulary_decoding == "lexicon":
            return word_loop(self.codec.charset, self.codec.vocabulary)
        return None

    def read(self, outputs: dict[str, torch.Tensor]) -> list[tuple[str, float]]:
        lengths = outputs["lengths"].tolist()
        if self.lexicon is not None:
            return read_batch(self.lexicon, log_probabilities(outputs["logits"]), lengths)
        best, index = outputs["logits"].float().softmax(-1).max(-1)
        return [self.transcript(index[i, :n].tolist(), best[i, :n].tolist()) for i, n in enumerate(lengths)]

    def stream_decoder(self) -> StreamDecoder:
        return LexiconStream(self.lexicon) if self.lexicon is not None else BestPathStream(self)

    def text_of(self, target: torch.Tensor) -> str:
        return self.codec.text_of(target)

    def transcript(self, path: list[int], probs: list[float]) -> tuple[str, float]:
        """A clip's transcript from its best CTC path (repeats collapsed, blanks dropped, then each word mapped
        onto the nearest vocabulary word when so configured) and its confidence (`emitted_confidence`)."""
        vocabulary = self.codec.vocabulary if self.cfg.model.constrain_to_vocabulary else None
        return transcript(path, probs, self.codec.charset, vocabulary)

    def predict(self, outputs: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        return [{"text": text, "confidence": confidence} for text, confidence in self.read(outputs)]

    def stream_file(self, model: nn.Module, path: Path) -> Iterator[tuple[float, str]]:
        """(seconds decoded so far, transcript so far) after each window of the audio file at `path`, read a
        window at a time."""
        yield from transcribe_stream(self, model, file_chunks(path, self.codec.features, self.cfg.model.streaming))


def log_probabilities(logits: torch.Tensor) -> np.ndarray:
    return logits.float().log_softmax(-1).cpu().numpy()


class BestPathStream:
    """A recording's transcript so far from its growing best path."""

    def __init__(self, outputs: AsrOutputs) -> None:
        self.outputs = outputs
        self.path: list[int] = []
        self.probs: list[float] = []

    def push(self, logits: torch.Tensor) -> str:
        best, index = logits[0].float().softmax(-1).max(-1)
        self.path += index.tolist()
        self.probs += best.tolist()
        return self.outputs.transcript(self.path, self.probs)[0]


class LexiconStream:
    """A recording's transcript so far: the lexicon search advanced by each window's frames."""

    def __init__(self, loop: WordLoop) -> None:
        self.search = LexiconSearch(loop)

    def push(self, logits: torch.Tensor) -> str:
        self.search.push(log_probabilities(logits))
        return self.search.text()
