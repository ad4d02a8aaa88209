"""asr's signal-level augmentation, for a model that must hear voices, rooms and channels its one synthesizer never
makes: coloured noise, room reverberation from synthetic impulse responses, band limiting, codec-like degradation
on the waveform; vocal tract length (formant) warping and tempo change on the log-mel spectrogram. Random draws
come from torch's stream (`generator` where given), which the trainer seeds and checkpoints."""

from __future__ import annotations

import math

import torch

from lifecycle.audio import SAMPLE_RATE, fft_length, resample
from lifecycle.sequence import STRIDE

NOISE_COLORS = {"white": 0.0, "pink": 0.5, "brown": 1.0}  # amplitude spectrum ~ 1 / f^exponent
CODECS = ("mulaw", "narrowband")


def colored_noise(samples: int, color: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """1 x `samples` noise of unit RMS whose power falls as 1/f^(2 x exponent): white, pink or brown. Coloured
    noise is shaped at `fft_length(samples)` and cut to `samples`: a stretch of coloured noise is coloured noise."""
    exponent = NOISE_COLORS[color]
    if exponent == 0 or samples < 4:
        return torch.randn(1, samples, generator=generator)
    size = fft_length(samples)
    spectrum = torch.fft.rfft(torch.randn(1, size, generator=generator))
    freqs = (torch.arange(spectrum.shape[-1]) * (samples / size)).clamp(min=1)  # in the clip's own FFT bins
    shaped = torch.fft.irfft(spectrum / freqs**exponent, n=size)[..., :samples]
    return shaped / shaped.pow(2).mean().sqrt().clamp(min=1e-8)


def add_colored_noise(
    waveform: torch.Tensor, snr_db: float, color: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Noise of `color` added `snr_db` below the clip's power."""
    power = waveform.pow(2).mean().clamp(min=1e-10)
    noise = colored_noise(waveform.shape[-1], color, generator).reshape(waveform.shape)
    return waveform + noise * torch.sqrt(power / 10 ** (snr_db / 10))


def room_impulse_response(rt60_s: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A synthetic room: a direct path, then Gaussian noise decaying 60 dB over `rt60_s` (Sabine's exponential
    tail), unit energy."""
    n = max(2, round(rt60_s * SAMPLE_RATE))
    decay = torch.exp(-math.log(1000.0) * torch.arange(n) / n)  # 60 dB of amplitude over the tail
    rir = torch.randn(n, generator=generator) * decay * 0.3
    rir[0] = 1.0
    return rir / rir.norm()


def reverberate(waveform: torch.Tensor, rt60_s: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The clip as heard in a room of reverberation time `rt60_s`, its length and peak level kept."""
    rir = room_impulse_response(rt60_s, generator)
    size = fft_length(waveform.shape[-1] + len(rir))  # beyond the full convolution: no wrap-around
    wet = torch.fft.irfft(torch.fft.rfft(waveform, size) * torch.fft.rfft(rir, size), size)[..., : waveform.shape[-1]]
    return wet * (waveform.abs().max() / wet.abs().max().clamp(min=1e-8))


def band_limit(waveform: torch.Tensor, low_hz: float, high_hz: float) -> torch.Tensor:
    """Only `low_hz`..`high_hz` kept, as a cheap microphone, a telephone or a small loudspeaker would pass it: a
    4th-order Butterworth magnitude response on each side (24 dB per octave), applied in one FFT (biquads cost
    ten times as much on a CPU)."""
    n = waveform.shape[-1]
    size = fft_length(max(n, 2))
    freqs = torch.fft.rfftfreq(size, 1 / SAMPLE_RATE).clamp(min=1.0)
    gain = 1 / torch.sqrt((1 + (freqs / high_hz) ** 8) * (1 + (low_hz / freqs) ** 8))
    return torch.fft.irfft(torch.fft.rfft(waveform, size) * gain, size)[..., :n]


def degrade(waveform: torch.Tensor, codec: str) -> torch.Tensor:
    """A codec's loss: 8-bit mu-law quantisation (G.711) or a narrowband channel (8 kHz and back)."""
    from torchaudio.functional import mu_law_decoding, mu_law_encoding

    if codec == "mulaw":
        return mu_law_decoding(mu_law_encoding(waveform.clamp(-1, 1), 256), 256)
    if codec == "narrowband":
        return resample(resample(waveform, SAMPLE_RATE, 8000), 8000, SAMPLE_RATE)[..., : waveform.shape[-1]]
    raise ValueError(f"unknown codec '{codec}'; choose from {', '.join(CODECS)}")


def _hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def warp_formants(spec: torch.Tensor, factor: float) -> torch.Tensor:
    """Vocal tract length perturbation on a 1 x n_mels x T log-mel spectrogram (HTK mel bands up to half the
    sample rate, torchaudio's default): the band at f takes the value at f / `factor`, so formants move up by
    `factor` (a shorter vocal tract) or down."""
    n_mels = spec.shape[-2]
    top = _hz_to_mel(torch.tensor(SAMPLE_RATE / 2))
    centers = torch.linspace(0, float(top), n_mels + 2)[1:-1]
    hz = 700.0 * (10 ** (centers / 2595.0) - 1.0)
    source = (_hz_to_mel(hz / factor) - centers[0]) / (centers[1] - centers[0])
    source = source.clamp(0, n_mels - 1)
    low = source.floor().long()
    high = (low + 1).clamp(max=n_mels - 1)
    weight = (source - low)[:, None]
    return spec[..., low, :] * (1 - weight) + spec[..., high, :] * weight


def change_tempo(spec: torch.Tensor, factor: float) -> torch.Tensor:
    """A 1 x n_mels x T spectrogram played `factor` times faster at the same pitch (frames interpolated),
    padded to the encoder's stride."""
    if abs(factor - 1.0) < 1e-3:
        return spec
    frames = max(STRIDE, round(spec.shape[-1] / factor))
    out = torch.nn.functional.interpolate(spec, size=frames, mode="linear", align_corners=False)
    return torch.nn.functional.pad(out, (0, (-frames) % STRIDE))
