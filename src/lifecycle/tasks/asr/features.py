"""asr's features: a clip as a log-mel spectrogram of 10 ms frames, augmented on the waveform and the
spectrogram when training."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lifecycle.audio import SAMPLE_RATE, change_speed
from lifecycle.sequence import STRIDE
from lifecycle.tasks.asr.augment import (
    CODECS,
    add_colored_noise,
    band_limit,
    change_tempo,
    degrade,
    reverberate,
    warp_formants,
)

if TYPE_CHECKING:
    from lifecycle.tasks.asr.config import AudioAugment

HOP = SAMPLE_RATE // 100  # samples per spectrogram frame (10 ms)
FRAME_SAMPLES = HOP * STRIDE  # samples per encoder frame (40 ms): chunk boundaries fall on these


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
    reverberation, band limiting, codec loss, gain and coloured noise on the waveform, then formant warping, tempo
    and SpecAugment's frequency and time masks (Park et al. 2019, torchaudio's) filled with the spectrogram's mean
    (zero would read as a loud band after the scaling), time masks covering at most a fifth of a clip. Random
    draws come from torch's stream, which the trainer seeds and checkpoints."""

    def __init__(self, features: LogMel, augment: AudioAugment | None = None) -> None:
        from torchaudio.transforms import FrequencyMasking, TimeMasking

        self.features = features
        self.augment = augment
        self.masks = (
            []
            if augment is None
            else (
                [FrequencyMasking(augment.freq_mask_bins)] * augment.freq_masks
                + [TimeMasking(augment.time_mask_frames, p=0.2)] * augment.time_masks
            )
        )

    def __call__(self, waveform: torch.Tensor, target: Any) -> tuple[torch.Tensor, Any]:
        a = self.augment
        if a is None:
            return self.features(waveform), target
        spec = self.features(_augmented_waveform(waveform, a))
        spec = change_tempo(warp_formants(spec, _uniform(*a.warp)), _uniform(*a.tempo))
        if self.masks:
            fill = float(spec.mean())
            for mask in self.masks:
                spec = mask(spec, fill)
        return spec, target


def _augmented_waveform(waveform: torch.Tensor, a: AudioAugment) -> torch.Tensor:
    waveform = change_speed(waveform, _uniform(*a.speed))
    if _uniform(0, 1) < a.reverb_probability:
        waveform = reverberate(waveform, _uniform(*a.rt60_s))
    if _uniform(0, 1) < a.band_probability:
        waveform = band_limit(waveform, _uniform(*a.low_cut_hz), _uniform(*a.high_cut_hz))
    if _uniform(0, 1) < a.codec_probability:
        waveform = degrade(waveform, CODECS[int(torch.randint(len(CODECS), ()))])
    waveform = waveform * 10 ** (_uniform(*a.gain_db) / 20)
    if _uniform(0, 1) < a.noise_probability:
        color = a.noise_colors[int(torch.randint(len(a.noise_colors), ()))]
        waveform = add_colored_noise(waveform, _uniform(*a.snr_db), color)
    return waveform


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))
