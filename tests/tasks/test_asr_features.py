"""asr's log-mel features: with `cmvn`, a channel's fixed colouring and the share of silence in a clip no
longer move the speech frames' values; without it, the fixed scaling stored models were trained with."""

from __future__ import annotations

import math

import torch

from lifecycle.audio import SAMPLE_RATE
from lifecycle.tasks.asr.features import LogMel


def vowel(seconds: float = 0.6) -> torch.Tensor:
    """A voiced sound: harmonics of 140 Hz up to 4 kHz, falling 6 dB an octave, with a rising and falling level."""
    t = torch.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    harmonics = sum(torch.sin(2 * math.pi * 140 * k * t) / k for k in range(1, 28))
    return (0.3 * torch.sin(math.pi * t / seconds) * harmonics)[None]


def coloured(waveform: torch.Tensor) -> torch.Tensor:
    """Through a channel whose gain rises with frequency (a small, bright loudspeaker)."""
    spectrum = torch.fft.rfft(waveform)
    freqs = torch.fft.rfftfreq(waveform.shape[-1], 1 / SAMPLE_RATE)
    return torch.fft.irfft(spectrum * (freqs / 1000).clamp(min=0.05), n=waveform.shape[-1])


def silence(seconds: float) -> torch.Tensor:
    return torch.zeros(1, round(seconds * SAMPLE_RATE))


def speech_frames(spec: torch.Tensor, first: int, count: int) -> torch.Tensor:
    return spec[0, :, first + 5 : first + count - 5]  # clear of the edges, where the window sees silence


def test_cmvn_removes_a_channels_colouring():
    clip = torch.cat([silence(0.2), vowel(), silence(0.2)], -1)

    def shift(features: LogMel) -> float:
        """How far the channel moves the speech frames, in units of their spread over time within a band."""
        frames = round(0.6 * 100)
        plain, through = speech_frames(features(clip), 20, frames), speech_frames(features(coloured(clip)), 20, frames)
        return float((through - plain).abs().mean() / plain.std(dim=-1).mean())

    assert shift(LogMel(32)) > 1, "the channel moves the plain features"
    assert shift(LogMel(32, "cmvn")) < 0.2 * shift(LogMel(32))


def test_cmvn_ignores_how_much_silence_surrounds_the_speech():
    frames = round(0.6 * 100)
    normalized = LogMel(32, "cmvn")
    short = normalized(torch.cat([silence(0.1), vowel(), silence(0.1)], -1))
    long = normalized(torch.cat([silence(0.1), vowel(), silence(2.0)], -1))
    assert torch.allclose(speech_frames(short, 10, frames), speech_frames(long, 10, frames), atol=1e-4)


def test_no_normalization_keeps_the_fixed_scaling():
    clip = vowel()
    expected = (torch.log(LogMel(32).mel(clip) + 1e-6) + 6.0) / 4.0
    assert torch.equal(LogMel(32)(clip)[..., : expected.shape[-1]], expected)
