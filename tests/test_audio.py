"""Resampling: torchaudio's filter, the same samples, and no process-wide switch flipped while a server's other
threads run inference."""

from __future__ import annotations

import threading

import pytest
import torch

from lifecycle.audio import audio_descriptors, resample


@pytest.mark.parametrize(
    ("from_rate", "to_rate"), [(22_050, 16_000), (16_000, 8_000), (8_000, 16_000), (44_100, 16_000)]
)
def test_resampling_gives_torchaudios_samples(from_rate, to_rate):
    from torchaudio.transforms import Resample

    generator = torch.Generator().manual_seed(0)
    for shape in [(1, 1), (1, 441), (1, 12_345), (2, 3, 999)]:
        clip = torch.randn(shape, generator=generator)
        expected = Resample(from_rate, to_rate)(clip)
        got = resample(clip, from_rate, to_rate)
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-5)
    assert resample(clip, to_rate, to_rate) is clip


def test_resampling_never_switches_onednn_off_for_other_threads():
    stop = threading.Event()

    def decode_forever() -> None:
        while not stop.is_set():
            for length in range(16_000, 16_040):
                resample(torch.zeros(1, length), 22_050, 16_000)

    worker = threading.Thread(target=decode_forever)
    worker.start()
    try:
        seen = {torch.backends.mkldnn.is_available() and torch._C._get_mkldnn_enabled() for _ in range(200_000)}
    finally:
        stop.set()
        worker.join()
    assert seen == {torch.backends.mkldnn.is_available()}, "oneDNN was switched off while another thread ran"


def test_descriptors_of_a_clip_without_samples_are_defined():
    assert audio_descriptors(torch.zeros(1, 0)) == {
        "duration": 0.0,
        "rms_db": -100.0,
        "snr_db": 0.0,
        "spectral_centroid": 0.0,
        "speech_rate": 0.0,
    }
