"""asr's features: a clip as a log-mel spectrogram of 10 ms frames, augmented on the waveform and the
spectrogram when training."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

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
LOG_SCALE = 4.0  # natural-log units of mel power per unit of the scaled spectrogram
SPEECH_RANGE_DB = 40.0  # frames this close to a clip's loudest are its speech, for the band statistics
STD_FLOOR = 0.25  # added to a band's deviation: a band a channel cut to its floor is not blown up into noise

Normalization = Literal["none", "cmvn"]


class LogMel(nn.Module):
    """1 x N waveform -> 1 x n_mels x T log-mel spectrogram (T a multiple of STRIDE), scaled by fixed constants.
    With `cmvn`, each band is standardised by its mean and deviation over the clip's speech frames (cepstral mean
    and variance normalisation, on the log-mel): the average spectral shape and dynamic range of a voice and a
    channel, which one synthesizer gives all its training clips and another does not, are taken out. An input is
    normalised over all of it; a file streamed a window at a time, over each window (chunk and context)."""

    def __init__(self, n_mels: int, normalization: Normalization = "none") -> None:
        super().__init__()
        from torchaudio.transforms import MelSpectrogram

        self.mel = MelSpectrogram(SAMPLE_RATE, n_fft=400, hop_length=HOP, n_mels=n_mels)
        self.normalization = normalization

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        spec = (torch.log(self.mel(waveform.float()) + 1e-6) + 6.0) / LOG_SCALE
        if self.normalization == "cmvn":
            spec = speech_cmvn(spec)
        return torch.nn.functional.pad(spec, (0, (-spec.shape[-1]) % STRIDE))


def speech_cmvn(spec: torch.Tensor) -> torch.Tensor:
    """Each band less its mean, over its deviation (plus STD_FLOOR), both taken over the speech frames: those whose
    mean level is within SPEECH_RANGE_DB of the loudest frame's (silence and pauses, whose share varies from clip to
    clip, left out)."""
    level = spec.mean(dim=-2, keepdim=True)
    threshold = SPEECH_RANGE_DB * math.log(10) / 10 / LOG_SCALE
    speech = (level >= level.amax(dim=-1, keepdim=True) - threshold).to(spec.dtype)
    frames = speech.sum(-1, keepdim=True)
    mean = (spec * speech).sum(-1, keepdim=True) / frames
    deviation = ((spec - mean).pow(2) * speech).sum(-1, keepdim=True).div(frames).sqrt()
    return (spec - mean) / (deviation + STD_FLOOR)


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
