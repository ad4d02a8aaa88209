"""classify's model: a small VGG-style CNN, cross-entropy, accuracy and F1."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import nn

from lifecycle.nets import conv_block
from lifecycle.tasks.parts import Forward, Network

if TYPE_CHECKING:  # torchmetrics takes seconds to import; stages that never compute metrics skip it
    from torchmetrics import MetricCollection


class DigitNet(nn.Module):
    """A full-resolution stem, two pooled double-conv stages, global average pooling. Runs channels-last, which
    oneDNN's CPU convolutions and CUDA's tensor cores both prefer."""

    def __init__(self, num_classes: int, width: int = 24, dropout: float = 0.1) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_block(1, w),
            nn.MaxPool2d(2),
            conv_block(w, 2 * w),
            conv_block(2 * w, 2 * w),
            nn.MaxPool2d(2),
            conv_block(2 * w, 4 * w),
            conv_block(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * w, num_classes))
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # valid at runtime, missing from torch's stubs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features the head classifies."""
        return self.features(x.contiguous(memory_format=torch.channels_last))


class ClassifyNetwork(Network):
    reads = ("collect", "model")

    def build(self) -> DigitNet:
        m = self.cfg.model
        return DigitNet(len(self.cfg.collect.classes), m.width, m.dropout)

    def forward(self, model: nn.Module, inputs: torch.Tensor) -> Forward:
        model = cast(DigitNet, model)
        features = model.embed(inputs)
        return Forward(model.head(features), features)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), targets, label_smoothing=self.cfg.model.label_smoothing)

    def metrics(self) -> MetricCollection:
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

        n = len(self.cfg.collect.classes)
        return MetricCollection(
            {
                "accuracy": MulticlassAccuracy(n, average="micro"),
                "macro_f1": MulticlassF1Score(n, average="macro"),
                "per_class_accuracy": MulticlassAccuracy(n, average=None),
                "per_class_f1": MulticlassF1Score(n, average=None),
            }
        )
