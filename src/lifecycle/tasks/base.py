"""The task interface: everything that differs between image classification, detection, OCR and speech
recognition lives behind these hooks; stages, trainer, service and monitor only call them.

A label is any JSON value, so one manifest format carries every task:
  classify  "7"
  detect    {"boxes": [[x0, y0, x1, y1], ...], "labels": ["3", ...], "mask": <COCO RLE of the class map>}
  ocr       "Invoice 2024-03-01"
  asr       "call nine one one"
A sample's input is one stored file (image or audio bytes, kept unchanged); `group` names what must stay on
one side of the split (a font family for OCR, a speaker for ASR, a source digit for detection scenes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel
from torch import nn

if TYPE_CHECKING:
    import pandas as pd
    from torchmetrics import MetricCollection

Label = Any  # JSON-serialisable
Batch = tuple[Any, Any]  # (inputs, targets), each a tensor or a structure of tensors


@dataclass(frozen=True)
class RawSample:
    """A sample a source produced, before the collect stage stores it."""

    data: bytes
    suffix: str  # file extension of the stored input, e.g. ".png", ".wav"
    label: Label
    source: str  # "embedded", "folder", "incoming", ...
    origin: str  # where exactly it came from: a file path, a dataset index
    group: str | None = None  # split unit; None means the content hash
    split: str | None = None  # a split the source already decided (scenes drawn from split source items)


@dataclass(frozen=True)
class Rejected:
    """A candidate sample that cannot be used; it goes to the quarantine with its reason."""

    source: str
    origin: str
    reason: str
    data: bytes | None = None
    suffix: str = ""


class InvalidSample(ValueError):
    """Raised by `Task.inspect` with the reason a sample is unusable."""


class InvalidInput(ValueError):
    """An input (or the request carrying it) that cannot be answered, raised by `Task.decode` and the service's
    upload checks; `status` is the HTTP status returned (400 malformed, 413 too large, 415 unsupported kind)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Task(ABC):
    """One task family. Subclasses set the class attributes and fill the hooks; `cfg` is the task's
    validated section of params.yaml (collect, validate, split, model, train, evaluate)."""

    name: ClassVar[str]
    endpoint: ClassVar[str]  # the service's route, e.g. "classify" -> POST /classify
    input_field: ClassVar[str] = "image"  # the multipart field holding the input file
    primary_metric: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    CollectConfig: ClassVar[type[BaseModel]]
    ValidateConfig: ClassVar[type[BaseModel] | None] = None  # a subclass of config.ValidateConfig; None: the generic one
    ModelConfig: ClassVar[type[BaseModel]]

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    # ---- data -------------------------------------------------------------------------------------
    @abstractmethod
    def collect(self, incoming: Path) -> Iterator[RawSample | Rejected]:
        """Every candidate from the configured sources and the landing zone `incoming`."""

    @abstractmethod
    def inspect(self, data: bytes, label: Label) -> dict[str, Any]:
        """Manifest columns describing one sample (e.g. width, height, duration); raise InvalidSample."""

    def label_set(self) -> list[str] | None:
        """The allowed class names, when labels are classes (used by validation); None otherwise."""
        return None

    def classes_of(self, label: Label) -> list[str]:
        """The classes a label holds, for balance checks: the label itself for a class, each object's class for
        detection, none for text."""
        return []

    def data_checks(self, rows: list[dict[str, Any]]) -> dict[str, tuple[pd.DataFrame, list[Any]]]:
        """Task-specific tables of the raw manifest's rows, each with its Great Expectations expectations (e.g. one
        row per box for detection); validated with the generic suites."""
        return {}

    # ---- model inputs -----------------------------------------------------------------------------
    @abstractmethod
    def decode(self, data: bytes) -> torch.Tensor:
        """Decode an input file's bytes into the tensor the transforms take (converting what can be converted);
        raise InvalidInput saying what is wrong. The service, batch inference and training all decode this way."""

    def load_input(self, path: Path) -> torch.Tensor:
        """Decode a stored sample file."""
        return self.decode(path.read_bytes())

    @abstractmethod
    def encode_target(self, label: Label) -> Any:
        """The training target for a manifest label."""

    @abstractmethod
    def transform(self, train: bool) -> Callable[[torch.Tensor, Any], tuple[Any, Any]]:
        """(input, target) -> (model input, target). Training applies `cfg.train.augment`; evaluation and
        serving call the same function with train=False, so preprocessing has one implementation."""

    def prepare(self, raw_input: torch.Tensor) -> Any:
        """One decoded input -> one model input, with the evaluation transform (serving and batch inference)."""
        return self.transform(train=False)(raw_input, None)[0]

    def padded_size(self, raw_input: torch.Tensor) -> int | None:
        """The size a batch pads a decoded input along (a text line's width, a clip's length): training batches
        inputs of similar size together. None: inputs come in one size."""
        return None

    def batch_inputs(self, inputs: Sequence[Any]) -> Any:
        """Transformed inputs -> one model input (training, evaluation and serving all batch this way)."""
        return torch.stack(list(inputs))

    def collate(self, items: Sequence[tuple[Any, Any]]) -> Batch:
        inputs, targets = zip(*items)
        return self.batch_inputs(inputs), torch.as_tensor(targets)

    # ---- model ------------------------------------------------------------------------------------
    @abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialised model from `cfg.model`."""

    def forward(self, model: nn.Module, inputs: Any) -> Any:
        return model(inputs)

    @abstractmethod
    def embed(self, model: nn.Module, inputs: Any) -> tuple[Any, torch.Tensor]:
        """(the outputs `forward` returns, one feature vector per input): one pass serves the prediction and the
        input's embedding that drift monitoring compares."""

    @abstractmethod
    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """A scalar training loss."""

    @abstractmethod
    def metrics(self) -> MetricCollection:
        """torchmetrics, updated with (outputs, targets); must contain `primary_metric`."""

    # ---- predictions ------------------------------------------------------------------------------
    @abstractmethod
    def predict(self, outputs: Any) -> list[dict[str, Any]]:
        """Post-process a batch of model outputs into one JSON-serialisable prediction per input."""

    def answer(self, prediction: dict[str, Any], options: dict[str, str]) -> dict[str, Any]:
        """The HTTP answer for a prediction, shaped by the request's query parameters (e.g. detection's
        `?mask=true`); raise InvalidInput for an unknown option. Without options, the prediction as it is."""
        if options:
            raise InvalidInput(f"/{self.endpoint} takes no query parameters, got {sorted(options)}")
        return prediction

    def confidence(self, prediction: dict[str, Any]) -> float | None:
        """The one number saying how sure a prediction is (logged for monitoring)."""
        value = prediction.get("confidence")
        return None if value is None else float(value)

    def monitored(self, prediction: dict[str, Any]) -> dict[str, str | float]:
        """The prediction as drift-monitoring columns: strings are compared as categories, numbers as numbers."""
        return {"confidence": self.confidence(prediction) or 0.0}

    @abstractmethod
    def descriptors(self, raw_input: torch.Tensor) -> dict[str, float]:
        """Per-sample numbers for drift monitoring, from the decoded (untransformed) input. Stable keys."""

    shifts: ClassVar[tuple[str, ...]] = ("none",)

    def shift(self, data: bytes, kind: str, rng: Any) -> bytes:
        """An input file changed the way production data drifts (`kind` from `shifts`), for traffic demonstrations."""
        if kind != "none":
            raise ValueError(f"task {self.name} has no shift '{kind}'; choose from {', '.join(self.shifts)}")
        return data

    # ---- labeling (Label Studio) -------------------------------------------------------------------
    def label_studio_config(self) -> str:
        """The Label Studio labeling interface (XML) for this task's inputs and labels."""
        raise NotImplementedError(f"task {self.name} has no Label Studio interface yet")

    def to_label_studio(self, prediction: dict[str, Any]) -> list[dict[str, Any]]:
        """A prediction as a Label Studio pre-annotation `result`."""
        raise NotImplementedError(f"task {self.name} has no Label Studio interface yet")

    def from_label_studio(self, result: Any) -> Label:
        """The label of a reviewed Label Studio annotation `result`; ValueError when it is malformed."""
        raise NotImplementedError(f"task {self.name} has no Label Studio interface yet")

    def landing_path(self, incoming: Path, label: Label, name: str) -> Path:
        """Where a labeled sample goes in the landing zone so that `collect` reads it with its label."""
        raise NotImplementedError(f"task {self.name} has no landing-zone layout yet")

    def report(self, predictions: list[dict[str, Any]], labels: list[Label], inputs: Sequence[Path],
               out_dir: Path, model: nn.Module | None = None) -> dict[str, Any]:  # fmt: skip
        """Write task-specific evaluation pictures and plot data under `out_dir` from the test split's predictions,
        labels and stored input files; return extra metrics. `model` is the evaluated model (in eval mode), for
        reports that run it further."""
        return {}

    def preview(self, samples: Sequence[tuple[torch.Tensor, Any]], path: Path) -> None:
        """Draw a grid of augmented training samples to `path` (PNG)."""
