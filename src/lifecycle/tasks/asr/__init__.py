"""Task `asr`: speech recognition of short commands and digit strings (default data: utterances synthesized with
eSpeak NG in many voices, the test split in voices training never hears; bring your own as a folder of audio files
with a `labels.tsv` of transcripts).

A clip becomes a log-mel spectrogram (10 ms frames) that the OCR task's CRNN reads like a text line, or a Conformer
encoder (`model.arch`), with character-level CTC. Transcripts hold vocabulary words, or with an open vocabulary
(`collect.alphabet`) any words spelled with its characters. Clips longer than `model.streaming.above_seconds` are
decoded in overlapping chunks (streaming), which bounds memory whatever the length; `lifecycle transcribe --stream`
does the same from a file."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from lifecycle.audio import AUDIO_SHIFTS, audio_descriptors, encode_wav, shift_audio
from lifecycle.config import ConfigError
from lifecycle.tasks import register_task
from lifecycle.tasks.asr.codec import AsrCodec
from lifecycle.tasks.asr.config import AsrCollect, AsrModel, AsrValidate, vocabulary_fits_decoding
from lifecycle.tasks.asr.network import AsrNetwork
from lifecycle.tasks.asr.outputs import AsrOutputs
from lifecycle.tasks.asr.reports import AsrReports
from lifecycle.tasks.asr.source import AsrSource
from lifecycle.tasks.parts import Goal, ModelCardText, Monitoring, Parts, Schemas, TaskSpec
from lifecycle.tasks.shared import TextLabeling

if TYPE_CHECKING:
    import numpy as np


class AsrMonitoring(Monitoring):
    """Audio descriptors (length, level, noise, pitch, speed) and the audio shifts."""

    shifts = AUDIO_SHIFTS

    def __init__(self, cfg: Any, codec: AsrCodec) -> None:
        super().__init__(cfg)
        self.codec = codec

    def descriptors(self, raw_inputs: Sequence[torch.Tensor]) -> list[dict[str, float]]:
        return [audio_descriptors(x) for x in raw_inputs]

    def monitored(self, prediction: dict[str, Any]) -> dict[str, str | float]:
        return {"confidence": float(prediction["confidence"]), "words": float(len(prediction["text"].split()))}

    def shift(self, data: bytes, kind: str, rng: np.random.Generator) -> bytes:
        return encode_wav(shift_audio(self.codec.decode(data), kind, rng)[0].numpy())


class AsrLabeling(TextLabeling):
    media, field, text_name = "Audio", "audio", "transcript"


def parts(cfg: Any) -> Parts:
    if cfg.train.augment:
        raise ConfigError(
            "asr.train.augment: torchvision image transforms do not apply to audio; "
            "configure audio augmentation under asr.model.augment"
        )
    codec = AsrCodec(cfg)
    outputs = AsrOutputs(cfg, codec)
    return Parts(
        source=AsrSource(cfg),
        codec=codec,
        network=AsrNetwork(cfg, outputs),
        outputs=outputs,
        monitoring=AsrMonitoring(cfg, codec),
        reports=AsrReports(cfg, codec, outputs),
        labeling=AsrLabeling(cfg),
    )


SPEC = register_task(
    TaskSpec(
        name="asr",
        endpoint="transcribe",
        goal=Goal("wer", higher_is_better=False),
        schemas=Schemas(collect=AsrCollect, model=AsrModel, validate=AsrValidate, check=vocabulary_fits_decoding),
        build_parts=parts,
        capabilities=frozenset({"labeling", "streaming", "variable_size"}),
        card=ModelCardText(
            does="Transcribes a spoken utterance of digits and command words: the transcript and a confidence.",
            inputs=(
                "Audio of any rate and channel count in any format libsndfile reads (WAV, FLAC, OGG), up to "
                "asr.model.streaming.max_seconds; long recordings are decoded in chunks."
            ),
            known_limits=(
                (
                    "Never trained on real speech: every training clip was synthesized with eSpeak NG, so human "
                    "voices, background conversation and real rooms are outside what it has heard."
                ),
                (
                    "With model.constrain_to_vocabulary (the default) it knows only its vocabulary (zero-nine, oh, yes "
                    "no up down left right on off stop go): every word it outputs is one of them, whatever was said. "
                    "With an open vocabulary it spells what it hears, and misspells words unlike those it trained on."
                ),
            ),
        ),
    )
)
