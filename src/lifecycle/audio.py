"""Audio helpers for the speech task: reading any WAV (or other libsndfile format) as 16 kHz mono, writing WAV,
describing a clip and shifting it the way production audio drifts. I/O is `soundfile`'s (torchaudio 2.9's own
needs FFmpeg); resampling is torchaudio's."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch

from lifecycle.samples import InvalidInput

SAMPLE_RATE = 16_000  # every clip is converted to this rate, mono, when decoded
SILENCE_DBFS = -50.0  # a clip whose loudest 20 ms stays below this level is silence


def audio_info(data: bytes) -> dict[str, Any]:
    """Sample rate, channels, frames and duration from the header; raises InvalidInput when there is none."""
    import soundfile as sf

    if not data:
        raise InvalidInput("empty file: no audio bytes received")
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        reason = str(e).rsplit(">: ", 1)[-1]  # without "Error opening <_io.BytesIO object at 0x...>"
        raise InvalidInput(f"not audio: not a format libsndfile reads (send WAV): {reason}", 415) from None
    if info.samplerate <= 0 or info.channels <= 0:
        raise InvalidInput(f"unreadable audio header: {info.samplerate} Hz, {info.channels} channels")
    return {
        "sample_rate": int(info.samplerate),
        "channels": int(info.channels),
        "frames": int(info.frames),
        "duration": info.frames / info.samplerate,
    }


def decode_audio(data: bytes, max_seconds: float) -> torch.Tensor:
    """Audio bytes as a float32 1 x N waveform at SAMPLE_RATE in [-1, 1]: channels averaged, any rate resampled.
    Raises InvalidInput for empty, non-audio or corrupt data (415/400) and for clips over `max_seconds` (413,
    checked from the header before any sample is decoded)."""
    import soundfile as sf

    info = audio_info(data)
    if info["duration"] > max_seconds:
        raise InvalidInput(f"audio is {info['duration']:.1f} s long; the longest accepted is {max_seconds:g} s", 413)
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise InvalidInput(f"truncated or corrupt audio: {e}") from None
    if samples.shape[0] == 0:
        raise InvalidInput("the audio holds no samples")
    if not np.isfinite(samples).all():
        raise InvalidInput("the audio holds NaN or infinite samples")
    return to_model_rate(torch.from_numpy(samples.mean(axis=1)), rate)[None, :]


def to_model_rate(samples: torch.Tensor, rate: int) -> torch.Tensor:
    """A mono waveform resampled from `rate` to SAMPLE_RATE (torchaudio's windowed-sinc resampler)."""
    samples = samples.float()
    return samples if rate == SAMPLE_RATE else resample(samples, rate, SAMPLE_RATE)


def encode_wav(waveform: np.ndarray | torch.Tensor, rate: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM WAV bytes of a mono float waveform in [-1, 1] (clipped) or int16 samples."""
    import soundfile as sf

    samples = np.asarray(waveform).reshape(-1)
    if samples.dtype != np.int16:
        samples = np.clip(samples, -1.0, 1.0)
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def frame_levels_db(waveform: torch.Tensor, frame: int = SAMPLE_RATE // 50) -> torch.Tensor:
    """The RMS level (dBFS) of each 20 ms frame of a 1 x N waveform."""
    x = waveform.reshape(-1)
    x = torch.nn.functional.pad(x, (0, (-len(x)) % frame)).reshape(-1, frame)
    return 10 * torch.log10(x.pow(2).mean(1) + 1e-10)


def fft_length(samples: int) -> int:
    """The smallest power of two of at least `samples` (at least 1): an FFT of a clip's own length may meet large
    prime factors and take up to 40x longer, so signals are zero-padded (or noise drawn) to this."""
    return 1 << (samples - 1).bit_length()


def audio_descriptors(waveform: torch.Tensor) -> dict[str, float]:
    """Duration (s), RMS level (dBFS), estimated SNR (dB: loud frames against the quietest tenth), spectral
    centroid (Hz, of the first 30 s) and speech rate (syllable-like energy peaks per second of sound) of a 1 x N
    waveform."""
    x = waveform.reshape(-1).float()
    if not len(x):  # decoding refuses a clip without samples; a caller that does not still gets an answer
        return {"duration": 0.0, "rms_db": -100.0, "snr_db": 0.0, "spectral_centroid": 0.0, "speech_rate": 0.0}
    levels = frame_levels_db(waveform)
    noise = torch.quantile(levels, 0.1)
    speech = torch.quantile(levels, 0.9)
    head = x[: SAMPLE_RATE * 30]
    spectrum = torch.fft.rfft(head, n=fft_length(len(head))).abs()
    freqs = torch.linspace(0, SAMPLE_RATE / 2, len(spectrum))
    duration = len(x) / SAMPLE_RATE
    return {
        "duration": duration,
        "rms_db": float(10 * torch.log10(x.pow(2).mean() + 1e-10)),
        "snr_db": float(speech - noise),
        "spectral_centroid": float((freqs * spectrum).sum() / (spectrum.sum() + 1e-10)),
        "speech_rate": _syllable_rate(levels, float(noise)),
    }


def _syllable_rate(levels: torch.Tensor, noise_db: float) -> float:
    """Peaks of the smoothed 20 ms level envelope standing 6 dB above their surroundings and 10 dB above the
    noise floor, per second of frames above that floor (a rough syllable count: de Jong & Wempe's idea)."""
    if len(levels) < 5:
        return 0.0
    smooth = torch.nn.functional.avg_pool1d(levels[None, None], 5, 1, 2, count_include_pad=False)[0, 0]
    active = smooth > noise_db + 10
    # the scan reads each level a few times: as Python floats (indexing the tensor cost 0.46 ms a clip)
    envelope, loud = smooth.tolist(), active.tolist()
    peaks = 0
    valley = envelope[0]
    for i in range(1, len(envelope) - 1):
        level = envelope[i]
        valley = min(valley, level)
        if loud[i] and level >= envelope[i - 1] and level > envelope[i + 1] and level - valley >= 6:
            peaks += 1
            valley = level
    seconds = float(active.sum()) / 50
    return peaks / seconds if seconds > 0 else 0.0


AUDIO_SHIFTS = ("none", "noise", "quiet", "fast", "telephone")


def shift_audio(waveform: torch.Tensor, kind: str, rng: np.random.Generator) -> torch.Tensor:
    """A 1 x N waveform as production might send it after the world changed (for demonstrations and tests):
    noise at 5 dB SNR, 30 dB quieter, 1.4x faster, or band-limited to telephone's 300-3,400 Hz."""
    from torchaudio.functional import bandpass_biquad

    if kind == "none":
        return waveform
    if kind == "noise":
        return add_noise(waveform, 5.0, torch.Generator().manual_seed(int(rng.integers(2**31))))
    if kind == "quiet":
        return waveform * 10 ** (-30 / 20)
    if kind == "fast":
        return change_speed(waveform, 1.4)
    if kind == "telephone":
        return bandpass_biquad(waveform, SAMPLE_RATE, central_freq=math.sqrt(300 * 3400), Q=0.5)
    raise ValueError(f"unknown shift '{kind}'; choose from {', '.join(AUDIO_SHIFTS)}")


def add_noise(waveform: torch.Tensor, snr_db: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """White noise added at `snr_db` below the clip's power (drawn from `generator`, or torch's global one)."""
    power = waveform.pow(2).mean().clamp(min=1e-10)
    noise = torch.randn(waveform.shape, generator=generator) * torch.sqrt(power / 10 ** (snr_db / 10))
    return waveform + noise


def change_speed(waveform: torch.Tensor, factor: float) -> torch.Tensor:
    """Played `factor` (to 0.01) times faster, and so higher: resampled as if it had been recorded at
    `factor` x its rate (Kaldi's speed perturbation)."""
    percent = round(factor * 100)
    return waveform if percent == 100 else resample(waveform, percent, 100)


def resample(waveform: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """torchaudio's windowed-sinc resampler (its filter computed once per rate pair) applied as one matrix product
    over strided windows, where torchaudio convolves: oneDNN compiles and caches a convolution kernel per input
    length, which for clips of many lengths costs more than the resampling, grows memory by ~0.4 MB a length and
    evicts the kernels training needs. (Switching oneDNN off around the convolution is no answer: the switch is
    process-wide, so a server's inference running in another thread at that moment would run without it.)"""
    if from_rate == to_rate:
        return waveform
    sinc = _sinc_filter(from_rate, to_rate)
    flat = waveform.reshape(-1, waveform.shape[-1])
    padded = torch.nn.functional.pad(flat, (sinc.width, sinc.width + sinc.step))
    windows = padded.unfold(-1, sinc.taps.shape[-1], sinc.step)  # clips x steps x taps
    out = (windows @ sinc.taps.T).reshape(flat.shape[0], -1)  # each step's `produced` samples in turn
    length = int(torch.ceil(torch.as_tensor(sinc.produced * flat.shape[-1] / sinc.step)))  # torchaudio's rounding
    return out[:, :length].reshape(*waveform.shape[:-1], -1)


@dataclass(frozen=True)
class SincFilter:
    step: int  # input samples per step
    produced: int  # output samples per step
    width: int  # padding on either side
    taps: torch.Tensor  # produced x taps


@cache
def _sinc_filter(from_rate: int, to_rate: int) -> SincFilter:
    from torchaudio.transforms import Resample

    resampler = Resample(from_rate, to_rate)
    gcd = math.gcd(from_rate, to_rate)
    return SincFilter(from_rate // gcd, to_rate // gcd, int(resampler.width), resampler.kernel[:, 0, :])
