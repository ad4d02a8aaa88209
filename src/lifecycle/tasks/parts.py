"""The parts a task is made of, one concern each, and the Task that holds them.

A stage or engine takes only the parts it uses (collect: the source; the service: codec, network, outputs). Each
part reads only the config sections it declares in `reads`, from which dvc.yaml's `params:` are derived; reading
an undeclared section fails loudly (the contract tests exercise every hook).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple, Protocol, runtime_checkable

import torch
from pydantic import BaseModel
from torch import nn

from lifecycle.config import SplitConfig, ValidateConfig
from lifecycle.samples import Batch, InvalidInput, Label, RawSample, Rejected

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from torchmetrics import MetricCollection

Checks = dict[str, tuple["pd.DataFrame", list[Any]]]  # table name -> (table, its Great Expectations expectations)
Transform = Callable[[Any, Any], tuple[Any, Any]]  # (input, target) -> (model input, target)


class SectionView:
    """A task's config seen through the sections one part declares; reading any other section is an error."""

    def __init__(self, cfg: Any, sections: Sequence[str], owner: str) -> None:
        self._cfg, self._sections, self._owner = cfg, tuple(sections), owner

    def __getattr__(self, name: str) -> Any:
        if name not in self._sections:
            raise AttributeError(
                f"{self._owner} reads config section '{name}' without declaring it in `reads` "
                f"(declared: {', '.join(self._sections) or 'none'})"
            )
        return getattr(self._cfg, name)


class Part:
    """Base of every part: `cfg` shows only the sections in `reads`."""

    reads: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: Any) -> None:
        self.cfg = SectionView(cfg, self.reads, type(self).__qualname__)

    def sections(self) -> set[str]:
        """The config sections this part reads, including those of the parts it holds."""
        held = (value for value in vars(self).values() if isinstance(value, Part))
        return set(self.reads).union(*(part.sections() for part in held))


class Source(Part):
    """Where samples come from (sources, landing zone), each sample's inspection, the labels and data checks."""

    def collect(self, incoming: Path) -> Iterator[RawSample | Rejected]:
        """Every candidate from the configured sources and the landing zone `incoming`."""
        raise NotImplementedError

    def inspect(self, data: bytes, label: Label) -> dict[str, Any]:
        """Manifest columns describing one sample (e.g. width, height, duration); raise InvalidSample."""
        raise NotImplementedError

    def label_set(self) -> list[str] | None:
        """The allowed class names, when labels are classes (used by validation); None otherwise."""
        return None

    def classes_of(self, label: Label) -> list[str]:
        """A label's classes, for balance checks: itself, each object's class, a transcript's words; none for text."""
        return []

    def groupings(self, row: dict[str, Any]) -> dict[str, str]:
        """The groups a manifest row belongs to, by grouping name (a voice, a font family): test metrics per group."""
        return {"group": str(row["group"])} if row.get("group") else {}

    def data_checks(self, rows: list[dict[str, Any]]) -> Checks:
        """Task-specific tables of the raw manifest's rows, each with its Great Expectations expectations."""
        return {}


class Codec(Part):
    """Input files to model inputs: decoding, targets, the train/eval transform and batching. The service, batch
    inference and training all decode and prepare this way, so preprocessing has one implementation."""

    input_field: ClassVar[str] = "image"  # the multipart field holding the input file
    media_types: ClassVar[tuple[str, ...]] = ("image/png", "image/jpeg")  # what the service's docs say it takes

    def decode(self, data: bytes) -> torch.Tensor:
        """An input file's bytes as the tensor the transform takes; raise InvalidInput saying what is wrong."""
        raise NotImplementedError

    def load_input(self, path: Path) -> torch.Tensor:
        """Decode a stored sample file."""
        return self.decode(path.read_bytes())

    def encode_target(self, label: Label) -> Any:
        """The training target for a manifest label."""
        raise NotImplementedError

    def transform(self, train: bool) -> Transform:
        """(input, target) -> (model input, target), augmented when `train`."""
        raise NotImplementedError

    def fit(self, inputs: Sequence[Any]) -> dict[str, Any]:
        """Model-section values derived from the training split's decoded inputs (key under `model` -> value), such
        as normalisation statistics; the trained model's config stores them, so serving prepares inputs alike."""
        return {}

    def held_out_distortion(self) -> tuple[str, Callable[[Any, torch.Generator], Any]] | None:
        """(family, distort) of the distortions the split holds out of training, for evaluation; None: none."""
        return None

    def prepare(self, raw_input: torch.Tensor) -> Any:
        """One decoded input -> one model input, with the evaluation transform (serving and batch inference)."""
        return self.evaluation_transform(raw_input, None)[0]

    @cached_property
    def evaluation_transform(self) -> Transform:
        return self.transform(train=False)  # built once: building one costs as much as applying it to a small input

    def padded_size(self, raw_input: torch.Tensor) -> int | None:
        """The size a batch pads an input along (a line's width, a clip's length); None: inputs come in one size."""
        return None

    def batch_inputs(self, inputs: Sequence[Any]) -> Any:
        """Transformed inputs -> one model input (training, evaluation and serving all batch this way)."""
        return torch.stack(list(inputs))

    def collate(self, items: Sequence[tuple[Any, Any]]) -> Batch:
        inputs, targets = zip(*items, strict=True)
        return self.batch_inputs(inputs), torch.as_tensor(targets)


class Forward(NamedTuple):
    """One pass of the model: its outputs, and one feature vector per input (what drift monitoring compares)."""

    outputs: Any
    features: torch.Tensor


class Network(Part):
    """The model: its architecture, the one forward pass, the loss and the metrics."""

    def build(self) -> nn.Module:
        """A freshly initialised model."""
        raise NotImplementedError

    def pretrained(self, keep_head: bool = False) -> tuple[nn.Module, dict[str, Any]]:
        """The model training starts from: built, with the configured initial weights loaded (the head replaced
        for the task's classes, unless `keep_head`: then a head that does not fit is an error); and what was loaded
        (keys loaded, replaced, missing). Default: `build()`."""
        return self.build(), {}

    def head_prefix(self, model: nn.Module) -> str | None:
        """The state-dict prefix of the model's head (the rest is the backbone, for freezing and its own learning
        rate); None when the model has no such split."""
        return None

    def forward(self, model: nn.Module, inputs: Any) -> Forward:
        raise NotImplementedError

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """A scalar training loss."""
        raise NotImplementedError

    def metrics(self) -> MetricCollection:
        """torchmetrics, updated with (outputs, targets); must hold the task's primary metric."""
        raise NotImplementedError


class Outputs(Part):
    """Model outputs to answers: post-processing, the HTTP answer and its confidence."""

    endpoint = ""  # the task's route, set from its spec when the task is configured (for error messages)
    # The JSON schema of `answer`'s result and of the query parameters it takes: the service's OpenAPI document
    answer_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    query_schema: ClassVar[dict[str, dict[str, Any]]] = {}

    def predict(self, outputs: Any) -> list[dict[str, Any]]:
        """A batch of model outputs as one JSON-serialisable prediction per input."""
        raise NotImplementedError

    def answer(self, prediction: dict[str, Any], options: dict[str, str]) -> dict[str, Any]:
        """The HTTP answer for a prediction, shaped by the request's query parameters; raise InvalidInput for an
        unknown option. Without options, the prediction as it is."""
        if options:
            raise InvalidInput(f"/{self.endpoint} takes no query parameters, got {sorted(options)}")
        return prediction

    def confidence(self, prediction: dict[str, Any]) -> float | None:
        """The one number saying how sure a prediction is (logged for monitoring, ranked for labeling)."""
        value = prediction.get("confidence")
        return None if value is None else float(value)


class Monitoring(Part):
    """What drift monitoring compares (input descriptors, prediction columns); how inputs drift, for demos."""

    shifts: ClassVar[tuple[str, ...]] = ("none",)

    def descriptors(self, raw_inputs: Sequence[torch.Tensor]) -> list[dict[str, float]]:
        """Stable-keyed numbers of each decoded (untransformed) input of a batch, whatever its batch mates."""
        raise NotImplementedError

    def monitored(self, prediction: dict[str, Any]) -> dict[str, str | float]:
        """The prediction as columns: strings are compared as categories, numbers as numbers."""
        return {"confidence": float(prediction.get("confidence") or 0.0)}

    def shift(self, data: bytes, kind: str, rng: np.random.Generator) -> bytes:
        """An input file changed the way production data drifts (`kind` from `shifts`)."""
        if kind != "none":
            raise ValueError(f"no shift '{kind}'; choose from {', '.join(self.shifts)}")
        return data


@runtime_checkable
class StreamingOutputs(Protocol):
    """Outputs of a task with the `streaming` capability: a recording read and decoded window by window."""

    def stream_file(self, model: nn.Module, path: Path) -> Iterator[tuple[float, str]]:
        """(seconds decoded so far, answer so far) after each window of the file at `path`."""
        ...


class Labeling(Part):
    """Human review in Label Studio: the labeling interface, predictions as pre-annotations, reviewed
    annotations back as labels, and reviewed samples written into the landing zone in the layout `collect` reads."""

    def interface(self) -> str:
        """The Label Studio labeling interface (XML)."""
        raise NotImplementedError

    def to_label_studio(self, prediction: dict[str, Any]) -> list[dict[str, Any]]:
        """A prediction as a Label Studio pre-annotation `result`."""
        raise NotImplementedError

    def from_label_studio(self, result: Any, data: bytes) -> Label:
        """The label of a reviewed annotation `result` of the input `data`; ValueError when it is malformed."""
        raise NotImplementedError

    def land(self, incoming: Path, samples: Sequence[Landing]) -> list[Path]:
        """Write labeled samples into the landing zone `incoming` in the layout `collect` reads, never overwriting
        a file (a sample already there is left as it is); return the files written."""
        raise NotImplementedError


class Landing(NamedTuple):
    """A labeled sample on its way to the landing zone: its file name there (content hash + suffix), bytes, label."""

    name: str
    data: bytes
    label: Label


class Reports(Part):
    """Pictures a person looks at: the test split's predictions after evaluation, augmented samples in training.
    `plots` are DVC plots over files `report` writes (path under the evaluate stage's figures -> plot properties)."""

    plots: ClassVar[dict[str, dict[str, str]]] = {}

    def report(
        self,
        predictions: list[dict[str, Any]],
        labels: list[Label],
        inputs: Sequence[Path],
        out_dir: Path,
        model: nn.Module | None = None,
    ) -> dict[str, Any]:
        """Write the task's evaluation pictures and plot data under `out_dir`; return extra metrics. `model` is
        the evaluated model (in eval mode), for reports that run it further."""
        return {}

    def preview(self, samples: Sequence[tuple[Any, Any]], path: Path) -> None:
        """Draw a grid of augmented training samples to `path` (PNG)."""


@dataclass(frozen=True)
class Parts:
    source: Source
    codec: Codec
    network: Network
    outputs: Outputs
    monitoring: Monitoring
    reports: Reports
    labeling: Labeling | None = None  # a task without Label Studio review has none


PART_NAMES = tuple(f.name for f in fields(Parts))


@dataclass(frozen=True)
class Goal:
    """The metric a task is judged by (validation picks epochs and trials by it, promotion compares on it)."""

    metric: str
    higher_is_better: bool = True

    def gain(self, new: float, old: float) -> float:
        """How much better `new` is than `old` (negative when worse)."""
        return (new - old) if self.higher_is_better else (old - new)

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        return "maximize" if self.higher_is_better else "minimize"


@dataclass(frozen=True)
class Schemas:
    """The task's own config sections; the generic ones (train, tune, ...) are the same for every task."""

    collect: type[BaseModel]
    model: type[BaseModel]
    validate: type[ValidateConfig] = ValidateConfig
    split: type[SplitConfig] = SplitConfig
    check: Callable[[Any], Any] | None = None  # validates the whole section, where one section constrains another


@dataclass(frozen=True)
class ModelCardText:
    """The model card's words a person writes once per task (the rest of the card comes from the run)."""

    does: str  # what the model does
    inputs: str  # which inputs it takes
    known_limits: tuple[str, ...]  # what it was never trained on or is known to get wrong


@dataclass(frozen=True)
class TaskSpec:
    """What a task is before any config is read: name, endpoint, goal, config schemas, capabilities, parts."""

    name: str
    endpoint: str
    goal: Goal
    schemas: Schemas
    build_parts: Callable[[Any], Parts]
    capabilities: frozenset[str] = frozenset()  # e.g. labeling, masks, onnx, streaming, variable_size
    card: ModelCardText | None = None  # what the model does, for which inputs, and its known limits

    def configure(self, cfg: Any) -> Task:
        """The task with its parts, for a validated config section."""
        parts = self.build_parts(cfg)
        parts.outputs.endpoint = self.endpoint
        return Task(self, cfg, parts)


@dataclass(frozen=True)
class Task:
    """One configured task: its spec, its validated config section, and its parts."""

    spec: TaskSpec
    cfg: Any
    parts: Parts

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def goal(self) -> Goal:
        return self.spec.goal

    @property
    def source(self) -> Source:
        return self.parts.source

    @property
    def codec(self) -> Codec:
        return self.parts.codec

    @property
    def network(self) -> Network:
        return self.parts.network

    @property
    def outputs(self) -> Outputs:
        return self.parts.outputs

    @property
    def monitoring(self) -> Monitoring:
        return self.parts.monitoring

    @property
    def reports(self) -> Reports:
        return self.parts.reports

    @property
    def labeling(self) -> Labeling | None:
        return self.parts.labeling

    def with_config(self, cfg: Any) -> Task:
        """The same task for another config section (tuning trials, tuned values)."""
        return self.spec.configure(cfg)
