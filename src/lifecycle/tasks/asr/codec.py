"""asr's inputs: any audio as 16 kHz mono, a log-mel spectrogram for the model; transcripts as character
targets; a batch of spectrograms padded to the longest, the inputs too long for one pass kept apart."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lifecycle.audio import SAMPLE_RATE, decode_audio
from lifecycle.samples import Label
from lifecycle.sequence import pad_to_widest
from lifecycle.tasks.asr.features import AudioTransform, LogMel, spectrogram_frames
from lifecycle.tasks.parts import Codec


class AsrCodec(Codec):
    reads = ("collect", "model")
    input_field = "audio"
    media_types = ("audio/wav", "audio/x-wav")

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._features: LogMel | None = None

    @property
    def vocabulary(self) -> list[str]:
        return self.cfg.collect.vocabulary

    @property
    def charset(self) -> str:
        return self.cfg.collect.charset()

    @property
    def features(self) -> LogMel:
        """The log-mel spectrogram, built once (on first use: torchaudio takes a while to import)."""
        if self._features is None:
            self._features = LogMel(self.cfg.model.n_mels, self.cfg.model.normalization)
        return self._features

    def decode(self, data: bytes) -> torch.Tensor:
        return decode_audio(data, self.cfg.model.streaming.max_seconds)

    def encode_target(self, label: Label) -> torch.Tensor:
        return torch.tensor([self.charset.index(c) + 1 for c in " ".join(label.split())], dtype=torch.long)

    def text_of(self, target: torch.Tensor) -> str:
        return "".join(self.charset[int(c) - 1] for c in target)

    def transform(self, train: bool) -> AudioTransform:
        return AudioTransform(self.features, self.cfg.model.augment if train else None)

    def padded_size(self, raw_input: torch.Tensor) -> int:
        return spectrogram_frames(raw_input.shape[-1])

    def batch_inputs(self, inputs: Sequence[torch.Tensor]) -> dict[str, Any]:
        """Spectrograms padded with zeros (masked by the network) to the longest; inputs longer than
        `streaming.above_seconds` stay apart, each decoded in chunks."""
        limit = spectrogram_frames(round(self.cfg.model.streaming.above_seconds * SAMPLE_RATE))
        whole = [i for i, x in enumerate(inputs) if x.shape[-1] <= limit]
        long = {i: x for i, x in enumerate(inputs) if x.shape[-1] > limit}
        return {
            **pad_to_widest([inputs[i] for i in whole], self.cfg.model.n_mels),
            "whole": whole,
            "long": long,
            "count": len(inputs),
        }

    def collate(self, items: Sequence[tuple[Any, Any]]) -> tuple[dict[str, Any], list[torch.Tensor]]:
        inputs, targets = zip(*items)
        return self.batch_inputs(inputs), list(targets)
