"""asr's streaming: a long input decoded in overlapping chunks of spectrogram frames (from memory, or from a
file read a window at a time), which bounds memory whatever its length."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

import torch
from torch import nn

from lifecycle.audio import SAMPLE_RATE
from lifecycle.sequence import STRIDE, CTCModel, Reader
from lifecycle.tasks.asr.decoding import word_error_rate
from lifecycle.tasks.asr.features import FRAME_SAMPLES, LogMel, spectrogram_frames

if TYPE_CHECKING:
    from lifecycle.tasks.asr.config import Streaming


class StreamDecoder(Protocol):
    """A recording's transcript so far, given the logits (1 x frames x classes) of its next frames."""

    def push(self, logits: torch.Tensor) -> str: ...


class Transcriber(Protocol):
    """What streaming needs to show a recording's transcript as it grows: a decoder for its frames."""

    def stream_decoder(self) -> StreamDecoder: ...


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
    recognizer = cast(CTCModel, model)
    spec = piece.spec.to(next(model.parameters()).device)[None]
    frames, _lengths = recognizer.encoder(spec, torch.tensor([spec.shape[-1]], device=spec.device))
    kept = frames[:, piece.keep_from : piece.keep_to]
    return recognizer.head(kept), kept


def _padded(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One batch's outputs from each input's own (1 x S_i x C logits), padded to the longest."""
    longest = max(p["logits"].shape[1] for p in parts)
    logits = torch.stack([nn.functional.pad(p["logits"][0], (0, 0, 0, longest - p["logits"].shape[1])) for p in parts])
    return {
        "logits": logits,
        "lengths": torch.cat([p["lengths"].reshape(1) for p in parts]).to(logits.device),
        "features": torch.cat([p["features"].reshape(1, -1) for p in parts]),
    }


def transcribe_stream(reader: Transcriber, model: nn.Module, windows: Iterator[Chunk]) -> Iterator[tuple[float, str]]:
    """(seconds decoded so far, transcript so far) after each chunk. The words near the end can still change:
    the next chunk may continue the last one, and the lexicon search weighs the new frames against its choices."""
    decoder = reader.stream_decoder()
    with torch.no_grad():
        for piece in windows:
            logits, _ = chunk_outputs(model, piece)
            yield piece.end_seconds, decoder.push(logits)


def streaming_agreement(
    reader: Reader,
    features: LogMel,
    streaming: Streaming,
    model: nn.Module,
    clips: Iterable[torch.Tensor],
    labels: Sequence[str],
    minutes: float = 2.0,
) -> dict[str, float]:
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
    spec = features(recording)
    s = streaming
    with torch.no_grad():
        device = next(model.parameters()).device
        full = model(spec[None].to(device), torch.tensor([spec.shape[-1]], device=device))
        streamed = streamed_outputs(model, chunks(spec, *s.window()))
    (full_text, _), (stream_text, _) = reader.read(full)[0], reader.read(streamed)[0]
    reference = " ".join(truth)
    return {
        "long_recording_seconds": round(seconds, 1),
        "streaming_vs_full_wer": word_error_rate(stream_text, full_text),
        "full_context_long_wer": word_error_rate(full_text, reference),
        "streaming_long_wer": word_error_rate(stream_text, reference),
    }
