"""Figures written the one way every report writes them: matplotlib's Agg backend, saved atomically as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lifecycle.atomic import atomic_path


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend (imported on first use: it takes a second)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 100, **savefig: Any) -> None:
    """Write a figure to `path` as PNG (whole or not at all) and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, **savefig)
    pyplot().close(fig)


def save_image_grid(grid: torch.Tensor, path: Path, title: str, width: float = 10.0, cmap: str | None = None) -> None:
    """A C x H x W image grid (torchvision's make_grid) drawn `width` inches wide under a title."""
    fig, ax = pyplot().subplots(figsize=(width, width * grid.shape[1] / grid.shape[2] + 0.5))
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap=cmap)
    ax.set_axis_off()
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)
