"""Task `asr`: speech recognition of short commands and digit strings (default data: utterances synthesized with
eSpeak NG in many voices, the test split in voices training never hears; bring your own as a folder of audio files
with a `labels.tsv` of transcripts).

A clip becomes a log-mel spectrogram (10 ms frames) that the OCR task's CRNN reads like a text line, with
character-level CTC. Clips longer than `model.streaming.above_seconds` are decoded in overlapping chunks
(streaming), which bounds memory whatever the length; `lifecycle transcribe --stream` does the same from a file."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from lifecycle.atomic import atomic_path
from lifecycle.audio import (AUDIO_SHIFTS, SAMPLE_RATE, SILENCE_DBFS, add_noise, audio_descriptors, audio_info,
                             change_speed, decode_audio, encode_wav, frame_levels_db, shift_audio)  # fmt: skip
from lifecycle.config import ConfigError, Strict, ValidateConfig
from lifecycle.sequence import (STRIDE, CTCRecognizer, EncoderHeight, ctc_loss, emitting_frames, pad_to_widest,
                                 text_metrics)
from lifecycle.sources.speech import VOCABULARY, Prosody
from lifecycle.tasks import register_task
from lifecycle.tasks.base import InvalidInput, InvalidSample, Label, RawSample, Rejected, Task

if TYPE_CHECKING:
    import pandas as pd
    from torchmetrics import MetricCollection

SPLITS = ("train", "val", "test")
HOP = SAMPLE_RATE // 100  # samples per spectrogram frame (10 ms)
FRAME_SAMPLES = HOP * STRIDE  # samples per encoder frame (40 ms): chunk boundaries fall on these
DEFAULT_VOICES = {
    "train": ["en-us+m1", "en-us+f2", "en-us+m4", "en+m3", "en+f1", "en+m6", "en-gb-scotland+m2", "en-gb-scotland+f4",
              "en-us-nyc+m5", "en-us-nyc+f3", "en-029+m7", "en-029+f5", "en-gb-x-rp+m2", "en-gb-x-rp+f2",
              "en-gb-x-gbclan+m1", "en-gb-x-gbcwmd+f1"],
    "val": ["en-us+m3", "en-gb-x-rp+f4"],
    "test": ["en-us+f1", "en+m2", "en-gb-scotland+f2", "en-029+m1"],
}  # fmt: skip


class AsrCollect(Strict):
    vocabulary: list[str] = Field(default_factory=lambda: list(VOCABULARY), min_length=1,
                                  description="the words a transcript may hold (lower case a-z)")  # fmt: skip
    embedded: bool = Field(True, description="synthesize utterances with eSpeak NG (the espeakng-loader wheel)")
    utterances: int = Field(4_000, ge=1, description="synthesized utterances, shared out by the split ratios")
    seed: int = 0
    voices: dict[str, list[str]] = Field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_VOICES.items()},
                                         description="accent+variant voices speaking each split (disjoint)")  # fmt: skip
    min_words: int = Field(1, ge=1)
    max_words: int = Field(6, ge=1)
    min_rate: int = Field(130, ge=80, le=450, description="speaking rate, words per minute")
    max_rate: int = Field(230, ge=80, le=450)
    min_pitch: int = Field(25, ge=0, le=100, description="eSpeak's pitch scale, 50 the voice's own")
    max_pitch: int = Field(75, ge=0, le=100)
    workers: int = Field(0, ge=0, description="synthesis processes (0: one per CPU core)")
    folder: Path | None = Field(None, description="your own clips: a folder of audio files and labels.tsv (path<TAB>transcript)")

    @field_validator("vocabulary", mode="before")
    @classmethod
    def _not_yaml_booleans(cls, words: Any) -> Any:
        if isinstance(words, list) and any(isinstance(w, bool) for w in words):
            raise ValueError("YAML reads bare yes/no/on/off as true/false: quote those words (\"yes\")")
        return words

    @field_validator("vocabulary")
    @classmethod
    def _words(cls, words: list[str]) -> list[str]:
        if bad := [w for w in words if not re.fullmatch(r"[a-z']+", w)]:
            raise ValueError(f"words are lower-case letters (and apostrophes), got {bad}")
        if len(set(words)) != len(words):
            raise ValueError("words must be unique")
        return words

    @model_validator(mode="after")
    def _voices_exist(self) -> AsrCollect:
        from lifecycle.sources.speech import voice_problem

        if self.min_words > self.max_words or self.min_rate > self.max_rate or self.min_pitch > self.max_pitch:
            raise ValueError("min_words/min_rate/min_pitch must not exceed max_words/max_rate/max_pitch")
        if sorted(self.voices) != sorted(SPLITS):
            raise ValueError(f"voices: give the voices of each of {list(SPLITS)}, got {sorted(self.voices)}")
        named = [v for names in self.voices.values() for v in names]
        if len(set(named)) != len(named) or any(not names for names in self.voices.values()):
            raise ValueError("voices: every split needs its own voices; a voice in two splits is heard in training")
        if self.embedded and not set(self.vocabulary) <= set(VOCABULARY):
            raise ValueError(f"synthesis speaks only {list(VOCABULARY)}; set embedded: false to bring other words")
        for split, names in self.voices.items():
            for voice in names:
                if problem := voice_problem(voice):
                    raise ValueError(f"voices.{split}: {problem}")
        return self

    def prosody(self) -> Prosody:
        return Prosody(self.min_words, self.max_words, self.min_rate, self.max_rate, self.min_pitch, self.max_pitch)


class AsrValidate(ValidateConfig):
    min_seconds: float = Field(0.1, gt=0, description="shorter clips are quarantined")
    max_seconds: float = Field(30.0, gt=0, description="longer clips are quarantined (training clips only)")


class AudioAugment(Strict):
    """Training-time audio augmentation, per clip: speed (and so pitch) perturbation, gain, additive noise at a
    random SNR on the waveform; SpecAugment time and frequency masks on the spectrogram."""

    speed: tuple[float, float] = Field((0.9, 1.1), description="playback-speed factor range (1: unchanged)")
    gain_db: tuple[float, float] = Field((-12.0, 6.0))
    noise_probability: float = Field(0.7, ge=0, le=1)
    snr_db: tuple[float, float] = Field((5.0, 40.0), description="additive white noise, dB below the clip")
    freq_masks: int = Field(2, ge=0)
    freq_mask_bins: int = Field(8, ge=1, description="widest frequency mask, in mel bins")
    time_masks: int = Field(2, ge=0)
    time_mask_frames: int = Field(10, ge=1, description="widest time mask, in 10 ms frames")

    @field_validator("speed", "gain_db", "snr_db")
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


class AsrModel(Strict):
    n_mels: EncoderHeight = Field(32, description="log-mel bands (the encoder's height: a multiple of 16)")
    width: int = Field(24, ge=4, description="channels of the encoder's stem; x2 and x4 further in")
    hidden: int = Field(96, ge=8, description="LSTM units per direction")
    dropout: float = Field(0.1, ge=0, lt=1)
    constrain_to_vocabulary: bool = Field(True, description="replace each decoded word by the nearest vocabulary word")
    augment: AudioAugment = Field(default_factory=AudioAugment)
    streaming: Streaming = Field(default_factory=Streaming)


# ---- features ---------------------------------------------------------------------------------------
class LogMel(nn.Module):
    """1 x N waveform -> 1 x n_mels x T log-mel spectrogram (T a multiple of STRIDE), scaled by fixed constants
    (not per clip: a chunk of a recording must look like the same part of the whole)."""

    def __init__(self, n_mels: int) -> None:
        super().__init__()
        from torchaudio.transforms import MelSpectrogram

        self.mel = MelSpectrogram(SAMPLE_RATE, n_fft=400, hop_length=HOP, n_mels=n_mels)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        spec = (torch.log(self.mel(waveform.float()) + 1e-6) + 6.0) / 4.0
        return torch.nn.functional.pad(spec, (0, (-spec.shape[-1]) % STRIDE))


def spectrogram_frames(samples: int) -> int:
    """Spectrogram frames of a clip of `samples` samples, padded to the encoder's stride."""
    frames = samples // HOP + 1
    return frames + (-frames) % STRIDE


class AudioTransform:
    """1 x N waveform -> 1 x n_mels x T log-mel spectrogram; augmented when `augment` is given (training): speed,
    gain and noise on the waveform, then SpecAugment's frequency and time masks (Park et al. 2019, torchaudio's)
    filled with the spectrogram's mean (zero would read as a loud band after the scaling), time masks covering at
    most a fifth of a clip. Random draws come from torch's stream, which the trainer seeds and checkpoints."""

    def __init__(self, features: LogMel, augment: AudioAugment | None = None) -> None:
        from torchaudio.transforms import FrequencyMasking, TimeMasking

        self.features = features
        self.augment = augment
        self.masks = [] if augment is None else (
            [FrequencyMasking(augment.freq_mask_bins)] * augment.freq_masks
            + [TimeMasking(augment.time_mask_frames, p=0.2)] * augment.time_masks)  # fmt: skip

    def __call__(self, waveform: torch.Tensor, target: Any) -> tuple[torch.Tensor, Any]:
        a = self.augment
        if a is not None:
            waveform = change_speed(waveform, _uniform(*a.speed))
            waveform = waveform * 10 ** (_uniform(*a.gain_db) / 20)
            if _uniform(0, 1) < a.noise_probability:
                waveform = add_noise(waveform, _uniform(*a.snr_db))
        spec = self.features(waveform)
        if self.masks:
            fill = float(spec.mean())
            for mask in self.masks:
                spec = mask(spec, fill)
        return spec, target


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


# ---- decoding ---------------------------------------------------------------------------------------
def edit_distance(a: Sequence[Any], b: Sequence[Any]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, start=1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def nearest_words(token: str, vocabulary: Sequence[str]) -> list[str]:
    """The vocabulary word closest to a decoded token, or two words when the token reads as two run together
    (a missed pause: `nineone`) clearly better than as one. Tokens longer than any two words (noise read as
    letters) are not cut: trying every cut would cost the square of their length."""
    one = min(vocabulary, key=lambda w: edit_distance(token, w))
    best = [one], edit_distance(token, one)
    longest = max(map(len, vocabulary))
    for cut in range(1, len(token) if len(token) <= 2 * longest + 1 else 0):
        left = min(vocabulary, key=lambda w: edit_distance(token[:cut], w))
        right = min(vocabulary, key=lambda w: edit_distance(token[cut:], w))
        cost = edit_distance(token[:cut], left) + edit_distance(token[cut:], right) + 1
        if cost < best[1]:
            best = [left, right], cost
    return best[0]


def constrain(text: str, vocabulary: Sequence[str]) -> str:
    return " ".join(w for token in text.split() for w in ([token] if token in vocabulary else nearest_words(token, vocabulary)))


def emitted_confidence(path: list[int], probs: list[float]) -> float:
    """The geometric mean of the probabilities of the frames that emit a character (a clip's confidence that
    does not shrink with its length); for a path that emits nothing, of its blank frames."""
    chosen = [probs[j] for j in emitting_frames(path)] or probs
    return float(np.exp(np.mean(np.log(np.maximum(chosen, 1e-12))))) if chosen else 0.0


# ---- the task ---------------------------------------------------------------------------------------
@register_task("asr")
class Asr(Task):
    endpoint = "transcribe"
    input_field = "audio"
    primary_metric = "wer"
    higher_is_better = False
    CollectConfig = AsrCollect
    ValidateConfig = AsrValidate
    ModelConfig = AsrModel

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        if cfg.train.augment:
            raise ConfigError("asr.train.augment: torchvision image transforms do not apply to audio; "
                              "configure audio augmentation under asr.model.augment")  # fmt: skip
        self._features: LogMel | None = None

    @property
    def vocabulary(self) -> list[str]:
        return self.cfg.collect.vocabulary

    @property
    def charset(self) -> str:
        return " " + "".join(sorted({c for word in self.vocabulary for c in word}))

    @property
    def features(self) -> LogMel:
        if self._features is None:
            self._features = LogMel(self.cfg.model.n_mels)
        return self._features

    # ---- data -------------------------------------------------------------------------------------
    def collect(self, incoming: Path) -> Iterator[RawSample | Rejected]:
        from lifecycle.sources.folders import tsv_labeled_files
        from lifecycle.sources.speech import synthesized_utterances

        c = self.cfg.collect
        if incoming.is_dir():
            yield from tsv_labeled_files(incoming, "incoming")
        if c.folder is not None:
            yield from tsv_labeled_files(Path(c.folder), "folder")
        if c.embedded:
            yield from synthesized_utterances(c.utterances, c.voices, self.cfg.split.model_dump(), c.seed, c.prosody(),
                                              c.workers, c.vocabulary)  # fmt: skip

    def label_set(self) -> list[str]:
        return list(self.vocabulary)

    def classes_of(self, label: Label) -> list[str]:
        return label.split() if isinstance(label, str) else []

    def inspect(self, data: bytes, label: Label) -> dict[str, Any]:
        v = self.cfg.validation
        if not isinstance(label, str) or not label.split():
            raise InvalidSample("empty transcript: a clip needs the words it says")
        if unknown := sorted({w for w in label.split() if w not in self.vocabulary}):
            raise InvalidSample(f"words outside the vocabulary: {unknown} in {label!r}")
        try:
            info = audio_info(data)
            if info["duration"] > v.max_seconds:
                raise InvalidSample(f"clip is {info['duration']:.1f} s long, over validate.max_seconds ({v.max_seconds:g} s)")
            if info["duration"] < v.min_seconds:
                raise InvalidSample(f"clip is {info['duration']:.3f} s long, under validate.min_seconds ({v.min_seconds:g} s)")
            waveform = decode_audio(data, v.max_seconds)
        except InvalidInput as e:
            raise InvalidSample(str(e)) from None
        loudest = float(frame_levels_db(waveform).max())
        if loudest < SILENCE_DBFS:
            raise InvalidSample(f"silence: the loudest 20 ms is at {loudest:.0f} dBFS")
        text = " ".join(label.split())
        return {"duration": info["duration"], "sample_rate": info["sample_rate"], "channels": info["channels"],
                "words": len(label.split()), "chars": len(text),
                "frames": spectrogram_frames(waveform.shape[-1]) // STRIDE}  # fmt: skip

    def data_checks(self, rows: list[dict[str, Any]]) -> dict[str, tuple[pd.DataFrame, list[Any]]]:
        """Clip lengths within the validation bounds, transcripts only of vocabulary words, and at least as many
        encoder frames as characters (CTC emits at most one character per frame)."""
        import great_expectations.expectations as gxe
        import pandas as pd

        v = self.cfg.validation
        words = "|".join(map(re.escape, self.vocabulary))
        clips = pd.DataFrame.from_records(
            [{"sample_id": r["sample_id"], "transcript": r["label"], "duration": r.get("duration"),
              "chars": r.get("chars"), "frames": r.get("frames")} for r in rows],
            columns=["sample_id", "transcript", "duration", "chars", "frames"])  # fmt: skip
        return {"clips": (clips, [
            gxe.ExpectColumnValuesToMatchRegex(column="transcript", regex=rf"^(?:{words})(?: (?:{words}))*$"),
            gxe.ExpectColumnValuesToBeBetween(column="duration", min_value=v.min_seconds, max_value=v.max_seconds),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="frames", column_B="chars", or_equal=True),
        ])}  # fmt: skip

    # ---- model inputs -----------------------------------------------------------------------------
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
        return {**pad_to_widest([inputs[i] for i in whole], self.cfg.model.n_mels), "whole": whole, "long": long,
                "count": len(inputs)}  # fmt: skip

    def collate(self, items: Sequence[tuple[Any, Any]]) -> tuple[dict[str, Any], list[torch.Tensor]]:
        inputs, targets = zip(*items)
        return self.batch_inputs(inputs), list(targets)

    # ---- model ------------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        m = self.cfg.model
        return CTCRecognizer(len(self.charset), m.n_mels, m.width, m.hidden, m.dropout)

    def forward(self, model: nn.Module, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        if not inputs["long"]:
            return model(inputs["images"], inputs["widths"])
        parts: dict[int, dict[str, torch.Tensor]] = {}
        if inputs["whole"]:
            batch = model(inputs["images"], inputs["widths"])
            parts = {i: {k: v[[row]] for k, v in batch.items()} for row, i in enumerate(inputs["whole"])}
        s = self.cfg.model.streaming
        for i, spec in inputs["long"].items():
            parts[i] = streamed_outputs(model, chunks(spec, *s.window()))
        return _padded([parts[i] for i in range(inputs["count"])])

    def embed(self, model: nn.Module, inputs: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        outputs = self.forward(model, inputs)
        return outputs, outputs["features"]

    def loss(self, outputs: dict[str, torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
        return ctc_loss(outputs, targets)

    def metrics(self) -> MetricCollection:
        from torchmetrics import MetricCollection

        return MetricCollection({"text": text_metrics()(self)})

    # ---- predictions ------------------------------------------------------------------------------
    def read(self, outputs: dict[str, torch.Tensor]) -> list[tuple[str, float]]:
        best, index = outputs["logits"].float().softmax(-1).max(-1)
        return [self.transcript(index[i, :n].tolist(), best[i, :n].tolist())
                for i, n in enumerate(outputs["lengths"].tolist())]  # fmt: skip

    def transcript(self, path: list[int], probs: list[float]) -> tuple[str, float]:
        """A clip's transcript from its best CTC path (repeats collapsed, blanks dropped, then each word mapped
        into the vocabulary when so configured) and its confidence (`emitted_confidence`)."""
        text = " ".join("".join(self.charset[path[j] - 1] for j in emitting_frames(path)).split())
        if self.cfg.model.constrain_to_vocabulary and text:
            text = constrain(text, self.vocabulary)
        return text, emitted_confidence(path, probs)

    def predict(self, outputs: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        return [{"text": text, "confidence": confidence} for text, confidence in self.read(outputs)]

    def monitored(self, prediction: dict[str, Any]) -> dict[str, str | float]:
        return {"confidence": float(prediction["confidence"]), "words": float(len(prediction["text"].split()))}

    def descriptors(self, raw_input: torch.Tensor) -> dict[str, float]:
        return audio_descriptors(raw_input)

    shifts = AUDIO_SHIFTS

    def shift(self, data: bytes, kind: str, rng: Any) -> bytes:
        return encode_wav(shift_audio(self.decode(data), kind, rng)[0].numpy())

    def report(self, predictions: list[dict[str, Any]], labels: list[Label], inputs: Sequence[Path],
               out_dir: Path, model: nn.Module | None = None) -> dict[str, Any]:  # fmt: skip
        """`test_spectrograms.png` (the first test clips with transcript and prediction), `errors.csv` (every
        clip transcribed wrong) and, with the model, the WER between streaming and full-context decoding of a
        long recording made of the test clips."""
        wrong = [(str(p), t, pred["text"], pred["confidence"]) for p, t, pred in zip(inputs, labels, predictions)
                 if pred["text"] != t]  # fmt: skip
        with atomic_path(out_dir / "errors.csv") as tmp, tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["input", "truth", "transcript", "confidence"])
            writer.writerows((path, truth, text, f"{conf:.4f}") for path, truth, text, conf in wrong)
        shown = [self.load_input(Path(p)) for p in inputs[:6]]
        _plot_spectrograms([self.features(x)[0] for x in shown], labels[:6], [p["text"] for p in predictions[:6]],
                           out_dir / "test_spectrograms.png")  # fmt: skip
        if model is None or not inputs:
            return {}
        return streaming_agreement(self, model, (self.load_input(Path(p)) for p in inputs), labels)

    def preview(self, samples: Sequence[tuple[torch.Tensor, Any]], path: Path) -> None:
        _plot_spectrograms([x[0] for x, _ in samples[:6]], [self.text_of(y) for _, y in samples[:6]], None, path)


# ---- streaming --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Chunk:
    """A window of spectrogram frames, and which of its encoder frames it decides (the rest is context)."""

    spec: torch.Tensor  # 1 x n_mels x T
    keep_from: int  # encoder frames
    keep_to: int
    end_seconds: float  # where the decided part ends in the recording


def chunks(spec: torch.Tensor, chunk_frames: int, context_frames: int) -> Iterator[Chunk]:
    """Overlapping windows of a 1 x n_mels x T spectrogram: each decides `chunk_frames` encoder frames and also
    sees `context_frames` on either side."""
    total = spec.shape[-1] // STRIDE
    for start in range(0, total, chunk_frames):
        end = min(start + chunk_frames, total)
        lo, hi = max(0, start - context_frames), min(total, end + context_frames)
        yield Chunk(spec[..., lo * STRIDE : hi * STRIDE], start - lo, end - lo, end * FRAME_SAMPLES / SAMPLE_RATE)


def file_chunks(path: Path, features: LogMel, streaming: Streaming) -> Iterator[Chunk]:
    """The chunks of an audio file, read a window at a time (memory bounded by the window, not the recording):
    each window is read with its context, mixed to mono, resampled and turned into a spectrogram."""
    import soundfile as sf

    from lifecycle.audio import to_model_rate

    chunk, context = streaming.window()
    with sf.SoundFile(str(path)) as f:
        rate = f.samplerate
        total = spectrogram_frames(round(f.frames * SAMPLE_RATE / rate)) // STRIDE
        for start in range(0, total, chunk):
            end = min(start + chunk, total)
            lo, hi = max(0, start - context), min(total, end + context)
            f.seek(min(round(lo * FRAME_SAMPLES * rate / SAMPLE_RATE), f.frames))
            block = f.read(round((hi - lo) * FRAME_SAMPLES * rate / SAMPLE_RATE), dtype="float32", always_2d=True)
            wave = to_model_rate(torch.from_numpy(block.mean(axis=1)), rate)[None, :]
            spec = features(wave)[..., : (hi - lo) * STRIDE]
            seconds = min(end * FRAME_SAMPLES / SAMPLE_RATE, f.frames / rate)  # the last frame pads past the end
            yield Chunk(spec, start - lo, min(end - lo, spec.shape[-1] // STRIDE), seconds)


def streamed_outputs(model: nn.Module, windows: Iterator[Chunk]) -> dict[str, torch.Tensor]:
    """A recogniser's outputs for a whole recording, decoded chunk by chunk: each chunk's decided frames, joined."""
    logits, features = [], []
    for piece in windows:
        out, frames = chunk_outputs(model, piece)
        logits.append(out)
        features.append(frames)
    joined = torch.cat(logits, 1) if logits else torch.zeros(1, 0, 1)
    counts = torch.tensor([f.shape[1] for f in features], dtype=torch.float32)
    pooled = sum(f.sum(1) for f in features) / counts.sum().clamp(min=1) if features else torch.zeros(1, 1)
    return {"logits": joined, "lengths": torch.tensor([joined.shape[1]]), "features": pooled}


def chunk_outputs(model: nn.Module, piece: Chunk) -> tuple[torch.Tensor, torch.Tensor]:
    """(1 x F x classes logits, 1 x F x features encoder frames) of the frames a chunk decides."""
    spec = piece.spec.to(next(model.parameters()).device)[None]
    frames, lengths = model.encoder(spec, torch.tensor([spec.shape[-1]], device=spec.device))
    kept = frames[:, piece.keep_from : piece.keep_to]
    return model.head(kept), kept


def _padded(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One batch's outputs from each input's own (1 x S_i x C logits), padded to the longest."""
    longest = max(p["logits"].shape[1] for p in parts)
    logits = torch.stack([nn.functional.pad(p["logits"][0], (0, 0, 0, longest - p["logits"].shape[1])) for p in parts])
    return {"logits": logits, "lengths": torch.cat([p["lengths"].reshape(1) for p in parts]).to(logits.device),
            "features": torch.cat([p["features"].reshape(1, -1) for p in parts])}  # fmt: skip


def transcribe_stream(task: Asr, model: nn.Module, windows: Iterator[Chunk]) -> Iterator[tuple[float, str]]:
    """(seconds decoded so far, transcript so far) after each chunk. Only the last word can still change: the
    next chunk may continue it."""
    path: list[int] = []
    probs: list[float] = []
    with torch.no_grad():
        for piece in windows:
            logits, _ = chunk_outputs(model, piece)
            best, index = logits[0].float().softmax(-1).max(-1)
            path += index.tolist()
            probs += best.tolist()
            yield piece.end_seconds, task.transcript(path, probs)[0]


def streaming_agreement(task: Asr, model: nn.Module, clips: Iterable[torch.Tensor], labels: Sequence[str],
                        minutes: float = 2.0) -> dict[str, float]:  # fmt: skip
    """Test clips joined into one recording of up to `minutes` (a 0.3 s pause between clips), decoded with full
    context and in streaming chunks: the WER between the two transcripts, and of each against the truth."""
    pause = torch.zeros(1, round(0.3 * SAMPLE_RATE))
    parts, truth, seconds = [], [], 0.0
    for clip, label in zip(clips, labels):
        if seconds + clip.shape[-1] / SAMPLE_RATE > minutes * 60:
            break
        parts += [clip, pause]
        truth.append(label)
        seconds += clip.shape[-1] / SAMPLE_RATE + 0.3
    recording = torch.cat(parts, -1)
    spec = task.features(recording)
    s = task.cfg.model.streaming
    with torch.no_grad():
        device = next(model.parameters()).device
        full = model(spec[None].to(device), torch.tensor([spec.shape[-1]], device=device))
        streamed = streamed_outputs(model, chunks(spec, *s.window()))
    (full_text, _), (stream_text, _) = task.read(full)[0], task.read(streamed)[0]
    reference = " ".join(truth)
    return {"long_recording_seconds": round(seconds, 1),
            "streaming_vs_full_wer": word_error_rate(stream_text, full_text),
            "full_context_long_wer": word_error_rate(full_text, reference),
            "streaming_long_wer": word_error_rate(stream_text, reference)}  # fmt: skip


def word_error_rate(heard: str, reference: str) -> float:
    """torchmetrics' WER; against an empty reference (where it is undefined), 0 when nothing is heard either, else 1."""
    from torchmetrics.functional.text import word_error_rate as wer

    return float(wer(heard, reference)) if reference.split() else float(bool(heard.split()))


def _plot_spectrograms(specs: Sequence[torch.Tensor], truths: Sequence[str], predictions: Sequence[str] | None,
                       path: Path) -> None:  # fmt: skip
    """One row per clip: its log-mel spectrogram, titled with the transcript (and the prediction, red when wrong)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(len(specs), 1)
    fig, axes = plt.subplots(rows, 1, figsize=(9, 1.7 * rows + 0.3), squeeze=False)
    for i, (ax, spec, truth) in enumerate(zip(axes[:, 0], specs, truths)):
        ax.imshow(spec.float().numpy(), origin="lower", aspect="auto", cmap="magma",
                  extent=(0, spec.shape[-1] * HOP / SAMPLE_RATE, 0, spec.shape[0]))  # fmt: skip
        ax.set_ylabel("mel band", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.set_title(f"truth: {truth}", fontsize=9, loc="left")
        if predictions is not None:
            ok = predictions[i] == truth
            ax.set_title(f"heard: {predictions[i] or '∅'}", fontsize=9, loc="right", color="black" if ok else "red")
    axes[-1, 0].set_xlabel("seconds", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
