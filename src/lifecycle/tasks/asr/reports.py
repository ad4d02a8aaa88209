"""asr's pictures: the first test clips' spectrograms with transcript and prediction, the clips transcribed
wrong, streaming against full-context decoding of a long recording; augmented training spectrograms."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lifecycle.atomic import atomic_path
from lifecycle.audio import SAMPLE_RATE
from lifecycle.figures import pyplot, save_figure
from lifecycle.samples import Label
from lifecycle.tasks.asr.codec import AsrCodec
from lifecycle.tasks.asr.features import HOP
from lifecycle.tasks.asr.outputs import AsrOutputs
from lifecycle.tasks.asr.streaming import streaming_agreement
from lifecycle.tasks.parts import Reports


class AsrReports(Reports):
    reads = ("model",)

    def __init__(self, cfg: Any, codec: AsrCodec, outputs: AsrOutputs) -> None:
        super().__init__(cfg)
        self.codec, self.outputs = codec, outputs

    def report(
        self,
        predictions: list[dict[str, Any]],
        labels: list[Label],
        inputs: Sequence[Path],
        out_dir: Path,
        model: nn.Module | None = None,
    ) -> dict[str, Any]:
        """`test_spectrograms.png` (the first test clips with transcript and prediction), `errors.csv` (every
        clip transcribed wrong) and, with the model, the WER between streaming and full-context decoding of a
        long recording made of the test clips."""
        wrong = [
            (str(p), t, pred["text"], pred["confidence"])
            for p, t, pred in zip(inputs, labels, predictions)
            if pred["text"] != t
        ]
        with atomic_path(out_dir / "errors.csv") as tmp, tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["input", "truth", "transcript", "confidence"])
            writer.writerows((path, truth, text, f"{conf:.4f}") for path, truth, text, conf in wrong)
        codec = self.codec
        shown = [codec.load_input(Path(p)) for p in inputs[:6]]
        plot_spectrograms(
            [codec.features(x)[0] for x in shown],
            labels[:6],
            [p["text"] for p in predictions[:6]],
            out_dir / "test_spectrograms.png",
        )
        if model is None or not inputs:
            return {}
        clips = (codec.load_input(Path(p)) for p in inputs)
        return streaming_agreement(self.outputs, codec.features, self.cfg.model.streaming, model, clips, labels)

    def preview(self, samples: Sequence[tuple[torch.Tensor, Any]], path: Path) -> None:
        plot_spectrograms([x[0] for x, _ in samples[:6]], [self.codec.text_of(y) for _, y in samples[:6]], None, path)


def plot_spectrograms(
    specs: Sequence[torch.Tensor], truths: Sequence[str], predictions: Sequence[str] | None, path: Path
) -> None:
    """One row per clip: its log-mel spectrogram, titled with the transcript (and the prediction, red when wrong)."""
    rows = max(len(specs), 1)
    fig, axes = pyplot().subplots(rows, 1, figsize=(9, 1.7 * rows + 0.3), squeeze=False)
    for i, (ax, spec, truth) in enumerate(zip(axes[:, 0], specs, truths)):
        ax.imshow(
            spec.float().numpy(),
            origin="lower",
            aspect="auto",
            cmap="magma",
            extent=(0, spec.shape[-1] * HOP / SAMPLE_RATE, 0, spec.shape[0]),
        )
        ax.set_ylabel("mel band", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.set_title(f"truth: {truth}", fontsize=9, loc="left")
        if predictions is not None:
            ok = predictions[i] == truth
            ax.set_title(f"heard: {predictions[i] or '∅'}", fontsize=9, loc="right", color="black" if ok else "red")
    axes[-1, 0].set_xlabel("seconds", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
