"""ocr's pictures: the first test lines with their truth and reading (wrong characters in red) and every line
read wrong with its character edits; augmented training lines."""

from __future__ import annotations

import csv
import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lifecycle.atomic import atomic_path
from lifecycle.figures import pyplot, save_figure
from lifecycle.samples import Label
from lifecycle.tasks.ocr.codec import OcrCodec
from lifecycle.tasks.parts import Reports

MONO_PT = 9  # the pictures' text size; DejaVu Sans Mono advances 0.602 em per character


class OcrReports(Reports):
    def __init__(self, cfg: Any, codec: OcrCodec) -> None:
        super().__init__(cfg)
        self.codec = codec

    def report(
        self,
        predictions: list[dict[str, Any]],
        labels: list[Label],
        inputs: Sequence[Path],
        out_dir: Path,
        model: nn.Module | None = None,
    ) -> dict[str, Any]:
        """`test_lines.png` (the first test lines, truth and reading, errors in red) and `errors.csv` (every line
        read wrong, with its character edits)."""
        wrong = [
            (str(path), label, p["text"], p["confidence"])
            for path, label, p in zip(inputs, labels, predictions, strict=False)
            if p["text"] != label
        ]
        with atomic_path(out_dir / "errors.csv") as tmp, tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["input", "truth", "read", "confidence", "edits"])
            writer.writerows(
                (path, truth, read, f"{conf:.4f}", edits(truth, read)) for path, truth, read, conf in wrong
            )
        _plot_lines(
            [self.codec.load_input(Path(p)) for p in inputs[:16]],
            labels[:16],
            [p["text"] for p in predictions[:16]],
            out_dir / "test_lines.png",
        )
        return {}

    def preview(self, samples: Sequence[tuple[torch.Tensor, Any]], path: Path) -> None:
        images = [x for x, _ in samples[:16]]
        texts = [self.codec.text_of(y) for _, y in samples[:16]]
        _plot_lines([((x - x.min()) / (x.max() - x.min() + 1e-6) * 255) for x in images], texts, None, path)


def edits(truth: str, read: str) -> str:
    """The character edits turning the truth into the reading, e.g. `'l'->'I'@3 ''->'.'@9` (positions in the truth)."""
    ops = difflib.SequenceMatcher(a=truth, b=read, autojunk=False).get_opcodes()
    return " ".join(f"{truth[i1:i2]!r}->{read[j1:j2]!r}@{i1}" for tag, i1, i2, j1, j2 in ops if tag != "equal")


def _plot_lines(
    images: Sequence[torch.Tensor], truths: Sequence[str], readings: Sequence[str] | None, path: Path
) -> None:
    """One row per line: the image at its own aspect, then its truth, then (when given) the reading with wrong
    characters in red."""
    rows = len(images)
    fig, axes = pyplot().subplots(
        rows, 2, figsize=(10, 0.55 * rows + 0.6), squeeze=False, gridspec_kw={"width_ratios": [1, 1.3]}
    )
    for ax_image, ax_text, image, truth, i in zip(axes[:, 0], axes[:, 1], images, truths, range(rows), strict=False):
        ax_image.imshow(image[0].float().numpy(), cmap="gray")
        ax_image.set_anchor("W")
        ax_image.set_axis_off()
        ax_text.set_axis_off()
        _monospace(ax_text, 0.68, truth, [False] * len(truth))
        if readings is not None:
            read = readings[i]
            right = np.zeros(len(read), dtype=bool)
            for block in difflib.SequenceMatcher(a=truth, b=read, autojunk=False).get_matching_blocks():
                right[block.b : block.b + block.size] = True
            _monospace(ax_text, 0.18, read or "∅", [not ok for ok in right] if read else [True])
    title = "truth / read (wrong characters in red; errors.csv lists every edit)" if readings is not None else "label"
    axes[0, 1].set_title(title, fontsize=9, loc="left")
    fig.tight_layout()
    save_figure(fig, path)


def _monospace(ax: Any, y: float, text: str, wrong: Sequence[bool]) -> None:
    """`text` from the left of `ax`, one character per monospace advance (in points, so truth and reading line
    up whatever the layout), the wrong ones bold and red."""
    from matplotlib.transforms import offset_copy

    for k, (char, bad) in enumerate(zip(text, wrong, strict=True)):
        where = offset_copy(ax.transAxes, fig=ax.figure, x=k * 0.602 * MONO_PT, units="points")
        ax.text(
            0,
            y,
            char,
            transform=where,
            family="DejaVu Sans Mono",
            fontsize=MONO_PT,
            va="center",
            color="red" if bad else "black",
            weight="bold" if bad else "normal",
        )
