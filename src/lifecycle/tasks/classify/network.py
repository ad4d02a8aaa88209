"""classify's model: a small VGG-style CNN or any torchvision classifier, cross-entropy, accuracy and F1."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from lifecycle.nets import conv_block
from lifecycle.tasks.parts import Forward, Network
from lifecycle.weights import load_initial
from lifecycle.zoo import BUILTIN, build_classifier, find_head, logits_of

if TYPE_CHECKING:  # torchmetrics takes seconds to import; stages that never compute metrics skip it
    from torchmetrics import MetricCollection


class DigitNet(nn.Module):
    """A full-resolution stem, two pooled double-conv stages, global average pooling. Runs channels-last, which
    oneDNN's CPU convolutions and CUDA's tensor cores both prefer."""

    def __init__(self, num_classes: int, width: int = 24, dropout: float = 0.1, channels: int = 1) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_block(channels, w),
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


class TorchvisionClassifier(nn.Module):
    """A torchvision classifier whose head (`head_name`) has the task's classes; grey inputs are repeated to the
    three channels torchvision's architectures (and their pretrained weights) take."""

    def __init__(self, net: nn.Module, head_name: str) -> None:
        super().__init__()
        self.net = net
        self.head_name = head_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits_of(self.net(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x))

    def with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, the head's input pooled to one vector per image)."""
        seen: list[torch.Tensor] = []
        hook = self.net.get_submodule(self.head_name).register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
        try:
            logits = self(x)
        finally:
            hook.remove()
        features = seen[-1]
        return logits, features.flatten(2).mean(dim=2) if features.ndim > 2 else features


class ClassifyNetwork(Network):
    reads = ("collect", "model")

    def build(self) -> nn.Module:
        m, n = self.cfg.model, len(self.cfg.collect.classes)
        if m.arch == BUILTIN:
            return DigitNet(n, m.width, m.dropout, m.channels)
        net = build_classifier(m.arch, n, m.input_size)
        return TorchvisionClassifier(net, find_head(net, n))

    def pretrained(self, keep_head: bool = False) -> tuple[nn.Module, dict[str, Any]]:
        model = self.build()
        spec = self.cfg.model.weights
        if spec is None:
            return model, {}
        target = model.net if isinstance(model, TorchvisionClassifier) else model
        head = None if keep_head else cast(str, self.head_prefix(model)).removeprefix("net.")
        return model, load_initial(target, spec, head)

    def head_prefix(self, model: nn.Module) -> str | None:
        return f"net.{model.head_name}." if isinstance(model, TorchvisionClassifier) else "head."

    def forward(self, model: nn.Module, inputs: torch.Tensor) -> Forward:
        if isinstance(model, TorchvisionClassifier):
            return Forward(*model.with_features(inputs))
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
