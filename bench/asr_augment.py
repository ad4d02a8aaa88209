"""asr's training augmentation per clip: params.yaml's `asr.model.augment` as the train loader runs it, against the
same pipeline with coloured noise shaped by an FFT of the clip's own length (the baseline: the straightforward way,
whose cost depends on the length's prime factors). Clips of random lengths, as synthesized speech has, side by side
in one process. Prints ms per clip and the ratio.

    python bench/asr_augment.py                  # 400 clips of 0.5-6 s, 3 rounds
    python bench/asr_augment.py --clips 1000 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from unittest import mock

import torch

from lifecycle.audio import SAMPLE_RATE
from lifecycle.params import load_params
from lifecycle.tasks import build_task
from lifecycle.tasks.asr import augment


def own_length_noise(samples: int, color: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """The baseline: white noise of the clip's length, coloured by an FFT of that length."""
    white = torch.randn(1, samples, generator=generator)
    exponent = augment.NOISE_COLORS[color]
    if exponent == 0 or samples < 4:
        return white
    spectrum = torch.fft.rfft(white)
    freqs = torch.arange(spectrum.shape[-1]).clamp(min=1).float()
    shaped = torch.fft.irfft(spectrum / freqs**exponent, n=samples)
    return shaped / shaped.pow(2).mean().sqrt().clamp(min=1e-8)


def ms_per_clip(transform: Callable, clips: list[torch.Tensor]) -> float:
    torch.manual_seed(0)
    start = time.perf_counter()
    for clip in clips:
        transform(clip, None)
    return (time.perf_counter() - start) / len(clips) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as one core of the train loader sees it
    task = build_task("asr", load_params(args.params, only=["asr"]).task("asr"))
    transform = task.codec.transform(train=True)
    lengths = torch.randint(
        SAMPLE_RATE // 2, 6 * SAMPLE_RATE, (args.clips,), generator=torch.Generator().manual_seed(0)
    )
    clips = [0.1 * torch.randn(1, int(n)) for n in lengths]
    project, baseline = [], []
    for _ in range(args.rounds):
        project.append(ms_per_clip(transform, clips))
        with mock.patch.object(augment, "colored_noise", own_length_noise):
            baseline.append(ms_per_clip(transform, clips))
    p, b = statistics.median(project), statistics.median(baseline)
    print(f"{args.clips} clips of 0.5-6 s, median of {args.rounds} rounds, one thread")
    print(f"baseline (noise by an FFT of the clip's length): {b:.2f} ms/clip")
    print(f"project: {p:.2f} ms/clip   ratio {p / b:.2f}x the baseline's time ({b / p:.2f}x as fast)")


if __name__ == "__main__":
    main()
