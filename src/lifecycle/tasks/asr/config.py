"""The asr task's own sections of params.yaml."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lifecycle.audio import SAMPLE_RATE
from lifecycle.config import Strict, ValidateConfig
from lifecycle.sequence import EncoderHeight
from lifecycle.sources.speech import VOCABULARY, Prosody
from lifecycle.splitting import SPLITS
from lifecycle.tasks.asr.decoding import charset_of
from lifecycle.tasks.asr.features import FRAME_SAMPLES, Normalization

VocabularyDecoding = Literal["nearest_word", "lexicon"]

DEFAULT_VOICES = {
    "train": [
        "en-us+m1",
        "en-us+f2",
        "en-us+m4",
        "en+m3",
        "en+f1",
        "en+m6",
        "en-gb-scotland+m2",
        "en-gb-scotland+f4",
        "en-us-nyc+m5",
        "en-us-nyc+f3",
        "en-029+m7",
        "en-029+f5",
        "en-gb-x-rp+m2",
        "en-gb-x-rp+f2",
        "en-gb-x-gbclan+m1",
        "en-gb-x-gbcwmd+f1",
    ],
    "val": ["en-us+m3", "en-gb-x-rp+f4"],
    "test": ["en-us+f1", "en+m2", "en-gb-scotland+f2", "en-029+m1"],
}


class AsrCollect(Strict):
    vocabulary: list[str] = Field(
        default_factory=lambda: list(VOCABULARY),
        min_length=1,
        description="the words a transcript may hold (lower case a-z)",
    )
    embedded: bool = Field(True, description="synthesize utterances with eSpeak NG (the espeakng-loader wheel)")
    utterances: int = Field(4_000, ge=1, description="synthesized utterances, shared out by the split ratios")
    seed: int = 0
    voices: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_VOICES.items()},
        description="accent+variant voices speaking each split (disjoint); accent+* is every variant not named",
    )
    min_words: int = Field(1, ge=1)
    max_words: int = Field(6, ge=1)
    min_rate: int = Field(130, ge=80, le=450, description="speaking rate, words per minute")
    max_rate: int = Field(230, ge=80, le=450)
    min_pitch: int = Field(25, ge=0, le=100, description="eSpeak's pitch scale, 50 the voice's own")
    max_pitch: int = Field(75, ge=0, le=100)
    min_range: int = Field(50, ge=0, le=100, description="intonation: eSpeak's pitch range, 0 monotone, 50 usual")
    max_range: int = Field(50, ge=0, le=100)
    max_word_gap: int = Field(0, ge=0, le=100, description="extra pause between words, drawn up to this x 10 ms")
    joined_share: float = Field(0.0, ge=0, le=1, description="share of clips that join 2..max_joined phrases")
    max_joined: int = Field(4, ge=1)
    max_join_gap_s: float = Field(1.5, ge=0.1, le=10, description="pause between joined phrases, drawn up to this")
    workers: int = Field(0, ge=0, description="synthesis processes (0: one per CPU core)")
    folder: Path | None = Field(
        None, description="your own clips: a folder of audio files and labels.tsv (path<TAB>transcript)"
    )
    alphabet: str | None = Field(
        None,
        description="open vocabulary: the characters transcripts are spelled with (the space apart), any word of them "
        "is collected; unset: every word must be a vocabulary word, spelled with the vocabulary's letters",
    )

    @field_validator("vocabulary", mode="before")
    @classmethod
    def _not_yaml_booleans(cls, words: Any) -> Any:
        if isinstance(words, list) and any(isinstance(w, bool) for w in words):
            raise ValueError("YAML reads bare true/false as booleans: quote those words")
        return words

    @field_validator("vocabulary")
    @classmethod
    def _words(cls, words: list[str]) -> list[str]:
        if bad := [w for w in words if not re.fullmatch(r"[a-z']+", w)]:
            raise ValueError(f"words are lower-case letters (and apostrophes), got {bad}")
        if len(set(words)) != len(words):
            raise ValueError("words must be unique")
        return words

    @field_validator("alphabet")
    @classmethod
    def _characters(cls, alphabet: str | None) -> str | None:
        if alphabet is not None and (not alphabet or any(c.isspace() or not c.isprintable() for c in alphabet)):
            raise ValueError(
                f"the alphabet is printable characters, no spaces (words are split at spaces): {alphabet!r}"
            )
        return alphabet

    @model_validator(mode="after")
    def _voices_exist(self) -> AsrCollect:
        from lifecycle.sources.speech import expand_voices, voice_problem

        bounds = ("words", "rate", "pitch", "range")
        if any(getattr(self, f"min_{b}") > getattr(self, f"max_{b}") for b in bounds):
            raise ValueError(f"min_{{{','.join(bounds)}}} must not exceed the max_ of the same")
        if sorted(self.voices) != sorted(SPLITS):
            raise ValueError(f"voices: give the voices of each of {list(SPLITS)}, got {sorted(self.voices)}")
        for split, names in self.voices.items():
            for voice in names:
                if problem := voice_problem(voice):
                    raise ValueError(f"voices.{split}: {problem}")
        expanded = expand_voices(self.voices)
        named = [v for names in expanded.values() for v in names]
        if len(set(named)) != len(named) or any(not names for names in expanded.values()):
            raise ValueError("voices: every split needs its own voices; a voice in two splits is heard in training")
        if self.embedded and not set(self.vocabulary) <= set(VOCABULARY):
            raise ValueError(f"synthesis speaks only {list(VOCABULARY)}; set embedded: false to bring other words")
        if self.embedded and self.alphabet and (missing := sorted(set("".join(self.vocabulary)) - set(self.alphabet))):
            raise ValueError(f"alphabet lacks {missing}, which the synthesized vocabulary words are spelled with")
        return self

    def charset(self) -> str:
        """The characters the model spells transcripts with (the space first)."""
        return charset_of([self.alphabet] if self.alphabet else self.vocabulary)

    def prosody(self) -> Prosody:
        return Prosody(
            self.min_words,
            self.max_words,
            self.min_rate,
            self.max_rate,
            self.min_pitch,
            self.max_pitch,
            min_range=self.min_range,
            max_range=self.max_range,
            max_word_gap=self.max_word_gap,
            joined_share=self.joined_share,
            max_joined=self.max_joined,
            max_join_gap_s=self.max_join_gap_s,
        )


class AsrValidate(ValidateConfig):
    min_seconds: float = Field(0.1, gt=0, description="shorter clips are quarantined")
    max_seconds: float = Field(30.0, gt=0, description="longer clips are quarantined (training clips only)")


class AudioAugment(Strict):
    """Training-time audio augmentation, per clip: speed (and so pitch) perturbation, room reverberation, band
    limiting, codec-like degradation, gain, additive noise of several colours at a random SNR on the waveform;
    vocal tract length (formant) warping, tempo and SpecAugment time and frequency masks on the spectrogram."""

    speed: tuple[float, float] = Field((0.9, 1.1), description="playback-speed factor range (1: unchanged)")
    reverb_probability: float = Field(0.0, ge=0, le=1, description="share of clips heard in a synthetic room")
    rt60_s: tuple[float, float] = Field((0.1, 0.6), description="the room's reverberation time range, seconds")
    band_probability: float = Field(0.0, ge=0, le=1, description="share of clips band-limited")
    low_cut_hz: tuple[float, float] = Field((50.0, 400.0), description="band limiting's lower edge range")
    high_cut_hz: tuple[float, float] = Field((2500.0, 7500.0), description="band limiting's upper edge range")
    codec_probability: float = Field(0.0, ge=0, le=1, description="share of clips mu-law or narrowband coded")
    gain_db: tuple[float, float] = Field((-12.0, 6.0))
    noise_probability: float = Field(0.7, ge=0, le=1)
    snr_db: tuple[float, float] = Field((5.0, 40.0), description="additive noise, dB below the clip")
    noise_colors: list[Literal["white", "pink", "brown"]] = Field(["white"], min_length=1)
    warp: tuple[float, float] = Field((1.0, 1.0), description="formant (vocal tract length) warp factor range")
    tempo: tuple[float, float] = Field((1.0, 1.0), description="tempo factor range, pitch kept (1: unchanged)")
    freq_masks: int = Field(2, ge=0)
    freq_mask_bins: int = Field(8, ge=1, description="widest frequency mask, in mel bins")
    time_masks: int = Field(2, ge=0)
    time_mask_frames: int = Field(10, ge=1, description="widest time mask, in 10 ms frames")

    @field_validator("speed", "gain_db", "snr_db", "rt60_s", "low_cut_hz", "high_cut_hz", "warp", "tempo")
    @classmethod
    def _ordered(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        if bounds[0] > bounds[1]:
            raise ValueError(f"a range is [low, high], got {list(bounds)}")
        return bounds


class Streaming(Strict):
    above_seconds: float = Field(30.0, gt=0, description="longer inputs are decoded in overlapping chunks")
    chunk_seconds: float = Field(8.0, gt=0, description="audio each chunk decodes (a multiple of 40 ms is used)")
    context_seconds: float = Field(2.0, ge=0, description="audio each chunk also sees on either side")
    max_seconds: float = Field(300.0, gt=0, description="longer inputs are refused (413)")

    @model_validator(mode="after")
    def _bounds(self) -> Streaming:
        if self.max_seconds < self.above_seconds:
            raise ValueError("max_seconds must be at least above_seconds")
        return self

    def frames(self, seconds: float) -> int:
        """Encoder frames (40 ms) in `seconds`."""
        return max(1, round(seconds * SAMPLE_RATE / FRAME_SAMPLES))

    def window(self) -> tuple[int, int]:
        """(frames a chunk decides, frames of context it sees on either side)."""
        return self.frames(self.chunk_seconds), self.frames(self.context_seconds)


class ConformerSize(Strict):
    """The Conformer encoder's sizes (`model.arch: conformer`)."""

    dim: int = Field(96, ge=8, description="features per frame (attention, convolutions): a multiple of heads")
    layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1, description="attention heads")
    ffn_dim: int = Field(256, ge=8, description="hidden units of each layer's two feed-forward modules")
    kernel_size: int = Field(15, ge=3, description="depthwise convolution, in 40 ms frames (odd)")
    subsampling_channels: int = Field(32, ge=4, description="channels of the two strided convolutions before")

    @model_validator(mode="after")
    def _shapes(self) -> ConformerSize:
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads}): each head reads dim/heads")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a frame sees as many on either side), got {self.kernel_size}")
        return self


class AsrModel(Strict):
    arch: Literal["crnn", "conformer"] = Field(
        "crnn", description="crnn: convolutions + bidirectional LSTM; conformer: torchaudio's Conformer encoder"
    )
    n_mels: EncoderHeight = Field(32, description="log-mel bands (the encoder's height: a multiple of 16)")
    normalization: Normalization = Field(
        "none",
        description="cmvn: each log-mel band standardised over a clip's speech frames (independent of the voice's "
        "and the channel's spectral shape); none: fixed scaling only, as models stored before this key",
    )
    width: int = Field(24, ge=4, description="crnn: channels of the encoder's stem; x2 and x4 further in")
    hidden: int = Field(96, ge=8, description="crnn: LSTM units per direction")
    conformer: ConformerSize = Field(default_factory=ConformerSize, description="conformer: its sizes")
    dropout: float = Field(0.1, ge=0, lt=1)
    constrain_to_vocabulary: bool = Field(True, description="answer only vocabulary words (false: an open vocabulary)")
    vocabulary_decoding: VocabularyDecoding = Field(
        "nearest_word",
        description="how constrain_to_vocabulary finds vocabulary words (unused otherwise): lexicon: the most "
        "probable sequence of vocabulary words under the CTC outputs (a Viterbi search over a loop of the words); "
        "nearest_word: the best path's letters, each word then replaced by the nearest vocabulary word (as models "
        "stored before this key)",
    )
    augment: AudioAugment = Field(default_factory=AudioAugment)
    streaming: Streaming = Field(default_factory=Streaming)


def vocabulary_fits_decoding(section: Any) -> Any:
    """An open vocabulary (collect.alphabet) is decoded as spelled: mapping each word onto the vocabulary would
    turn every word outside it into an error."""
    if section.collect.alphabet is not None and section.model.constrain_to_vocabulary:
        raise ValueError(
            "model.constrain_to_vocabulary: true maps every decoded word onto collect.vocabulary, but collect.alphabet "
            "admits any word spelled with its characters; set model.constrain_to_vocabulary: false for an open "
            "vocabulary, or unset collect.alphabet"
        )
    return section
