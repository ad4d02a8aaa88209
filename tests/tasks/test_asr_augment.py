"""asr's signal-level augmentation: noise of the asked colour and level, rooms that smear an impulse over their
reverberation time, band limits that remove what lies outside, codecs that lose detail, formant warps that move
a spectral peak, tempo that changes length, and the training transform that applies them all."""

from __future__ import annotations

import math

import pytest
import torch

from lifecycle.audio import SAMPLE_RATE
from lifecycle.sequence import STRIDE
from lifecycle.tasks.asr import augment
from lifecycle.tasks.asr.config import AudioAugment
from lifecycle.tasks.asr.features import AudioTransform, LogMel


def tone(hz: float, seconds: float = 0.5) -> torch.Tensor:
    return 0.5 * torch.sin(2 * math.pi * hz * torch.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE)[None]


def band_power(x: torch.Tensor, low: float, high: float) -> float:
    spectrum = torch.fft.rfft(x[0]).abs().pow(2)
    freqs = torch.fft.rfftfreq(x.shape[-1], 1 / SAMPLE_RATE)
    return float(spectrum[(freqs >= low) & (freqs < high)].mean())


def test_noise_has_its_colour_and_level():
    g = torch.Generator().manual_seed(0)
    slopes = {}
    for color in augment.NOISE_COLORS:
        noise = augment.colored_noise(SAMPLE_RATE, color, g)
        assert float(noise.pow(2).mean()) == pytest.approx(1.0, rel=0.05)
        slopes[color] = band_power(noise, 100, 400) / band_power(noise, 3200, 6400)
    assert slopes["white"] == pytest.approx(1.0, rel=0.3)
    assert 5 < slopes["pink"] < 40 < slopes["brown"], "power falls by 1/f (pink) and 1/f^2 (brown)"
    clip = tone(440)
    noisy = augment.add_colored_noise(clip, 10.0, "pink", g)
    snr = 10 * math.log10(float(clip.pow(2).mean()) / float((noisy - clip).pow(2).mean()))
    assert snr == pytest.approx(10.0, abs=0.5)


def test_a_room_spreads_an_impulse_over_its_reverberation_time():
    click = torch.zeros(1, SAMPLE_RATE)
    click[0, 100] = 1.0
    g = torch.Generator().manual_seed(0)
    short, long = (augment.reverberate(click, rt60, g) for rt60 in (0.1, 0.6))
    assert short.shape == click.shape and float(short.abs().max()) == pytest.approx(1.0)
    tail = slice(100 + int(0.2 * SAMPLE_RATE), 100 + int(0.4 * SAMPLE_RATE))
    assert float(long[0, tail].pow(2).sum()) > 100 * float(short[0, tail].pow(2).sum())


def test_band_limits_and_codecs_remove_what_they_should():
    mix = tone(150) + tone(1000) + tone(6000)
    limited = augment.band_limit(mix, 400, 3000)
    for hz, kept in ((150, False), (1000, True), (6000, False)):
        ratio = band_power(limited, hz - 20, hz + 20) / band_power(mix, hz - 20, hz + 20)
        assert (ratio > 0.5) if kept else (ratio < 0.05), hz
    narrow = augment.degrade(mix, "narrowband")
    assert narrow.shape == mix.shape and band_power(narrow, 5980, 6020) < 1e-3 * band_power(mix, 5980, 6020)
    coded = augment.degrade(mix / 4, "mulaw")
    assert 0 < float((coded - mix / 4).abs().max()) < 0.01, "8-bit mu-law loses detail, not the signal"
    with pytest.raises(ValueError, match="mulaw"):
        augment.degrade(mix, "mp3")


def test_formant_warp_moves_a_spectral_peak_and_tempo_changes_length():
    spec = LogMel(32)(tone(1000))
    peak = int(spec[0].mean(-1).argmax())
    assert torch.allclose(augment.warp_formants(spec, 1.0), spec, atol=1e-5)
    assert int(augment.warp_formants(spec, 1.2)[0].mean(-1).argmax()) > peak
    assert int(augment.warp_formants(spec, 0.8)[0].mean(-1).argmax()) < peak
    frames = spec.shape[-1]
    faster, slower = augment.change_tempo(spec, 1.25), augment.change_tempo(spec, 0.8)
    assert faster.shape[-1] % STRIDE == 0 and faster.shape[-1] == pytest.approx(frames / 1.25, abs=STRIDE)
    assert slower.shape[-1] == pytest.approx(frames / 0.8, abs=STRIDE)


def test_the_training_transform_applies_every_augmentation():
    everything = AudioAugment(
        reverb_probability=1.0,
        band_probability=1.0,
        codec_probability=1.0,
        noise_colors=["white", "pink", "brown"],
        warp=(0.9, 1.1),
        tempo=(0.9, 1.1),
    )
    features = LogMel(32)
    clip = tone(500, 1.0)
    torch.manual_seed(0)
    plain = AudioTransform(features)(clip, "x")[0]
    outs = [AudioTransform(features, everything)(clip, "x")[0] for _ in range(3)]
    assert all(o.shape[-2] == 32 and o.shape[-1] % STRIDE == 0 and torch.isfinite(o).all() for o in outs)
    assert all(not torch.equal(o, plain) for o in outs) and not torch.equal(outs[0], outs[1])
