"""classify's pictures: the confusion matrix of the test split, and augmented training images."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lifecycle.atomic import atomic_path
from lifecycle.figures import pyplot, save_figure, save_image_grid
from lifecycle.samples import Label
from lifecycle.tasks.classify.codec import denormalise
from lifecycle.tasks.parts import Reports


class ClassifyReports(Reports):
    reads = ("collect", "model")
    plots = {"confusion.csv": {"template": "confusion", "x": "predicted", "y": "actual"}}

    def report(
        self,
        predictions: list[dict[str, Any]],
        labels: list[Label],
        inputs: Sequence[Path],
        out_dir: Path,
        model: nn.Module | None = None,
    ) -> dict[str, Any]:
        from torchmetrics.classification import MulticlassConfusionMatrix

        classes = list(self.cfg.collect.classes)
        predicted = [p["label"] for p in predictions]
        with atomic_path(out_dir / "confusion.csv") as tmp, tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["actual", "predicted"])
            writer.writerows(zip(labels, predicted, strict=True))
        index = classes.index
        cm = MulticlassConfusionMatrix(len(classes))(
            torch.tensor([index(p) for p in predicted]), torch.tensor([index(y) for y in labels])
        )
        plot_confusion(cm, classes, out_dir / "confusion.png")
        return {}

    def preview(self, samples: Sequence[tuple[Any, Any]], path: Path) -> None:
        from torchvision.utils import make_grid

        images = denormalise(torch.stack([x for x, _ in samples]), self.cfg.model)
        grid = make_grid(images, nrow=8, padding=2, pad_value=1.0)
        captions = [self.cfg.collect.classes[int(y)] for _, y in samples]
        title = "Augmented training samples: " + " ".join(captions[:16]) + (" ..." if len(captions) > 16 else "")
        save_image_grid(grid, path, title, width=8, cmap="gray" if self.cfg.model.channels == 1 else None)


def plot_confusion(cm: torch.Tensor, classes: list[str], path: Path) -> None:
    n = len(classes)
    fig, ax = pyplot().subplots(figsize=(1 + 0.5 * n, 1 + 0.5 * n))
    ax.imshow(cm.numpy(), cmap="Blues")
    for (i, j), v in zip(((i, j) for i in range(n) for j in range(n)), cm.flatten().tolist(), strict=True):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color="white" if v > cm.max() / 2 else "black")
    ax.set(
        xticks=range(n),
        yticks=range(n),
        xticklabels=classes,
        yticklabels=classes,
        xlabel="predicted",
        ylabel="actual",
        title="Confusion matrix (test split)",
    )
    fig.tight_layout()
    save_figure(fig, path)
