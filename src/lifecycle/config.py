"""params.yaml -> a typed, validated config. An unknown key or a bad value stops the run before any work,
with a message naming the key path and what was expected."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """params.yaml is unreadable or does not match the schema."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _unique(names: list[str]) -> list[str]:
    if len(set(names)) != len(names):
        raise ValueError("class names must be unique")
    return names


ClassNames = Annotated[list[str], AfterValidator(_unique)]  # a task's classes, in the order models number them


def device_field() -> Any:
    """`auto`, `cpu`, `cuda` or `cuda:N` (see trainer.resolve_device)."""
    return Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")


class AugmentStep(Strict):
    """One `torchvision.transforms.v2` transform: its class name and keyword arguments."""

    name: str
    args: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _buildable(self) -> AugmentStep:
        from torchvision.transforms import v2

        cls = getattr(v2, self.name, None)
        if not isinstance(cls, type):
            raise ValueError(f"'{self.name}' is not a transform in torchvision.transforms.v2")
        try:
            cls(**self.args)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{self.name}({self.args}) cannot be built: {e}") from e
        return self

    def build(self) -> Any:
        from torchvision.transforms import v2

        return getattr(v2, self.name)(**self.args)


class ValidateConfig(Strict):
    min_samples: int = Field(10, ge=1)
    min_class_share: float = Field(0.02, ge=0, le=1, description="every label must hold at least this share")
    max_quarantine_share: float = Field(0.05, ge=0, le=1)
    min_side: int = Field(8, ge=1, description="smallest accepted image width/height, in pixels")
    max_side: int = Field(4096, ge=1, description="largest accepted image width/height, in pixels")


class SplitConfig(Strict):
    train: float = Field(0.8, gt=0, lt=1)
    val: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self


class DistributedConfig(Strict):
    """Data-parallel training with torchrun: `nproc_per_node` processes on each of `nnodes` machines, which meet
    at `rdzv_endpoint` (host:port of one of them; not needed on one machine). One process in all (the default)
    trains without torchrun."""

    nproc_per_node: int = Field(1, ge=1, description="processes per machine, one per GPU on CUDA")
    nnodes: int = Field(1, ge=1, description="machines taking part; each runs the train stage")
    rdzv_endpoint: str | None = Field(
        None, pattern=r"^[^:\s]+:\d{1,5}$", description="host:port where the machines meet (several machines)"
    )
    backend: Literal["auto", "gloo", "nccl"] = Field("auto", description="auto: nccl on CUDA, gloo on CPU")

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    @model_validator(mode="after")
    def _endpoint_for_several_machines(self) -> DistributedConfig:
        if self.nnodes > 1 and self.rdzv_endpoint is None:
            raise ValueError("rdzv_endpoint (host:port of one machine) is needed when nnodes > 1")
        return self


class TrainConfig(Strict):
    epochs: int = Field(10, ge=1)
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="auto: from the training split's size"
    )
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only")
    scheduler: Literal["onecycle", "cosine", "constant"] = "onecycle"
    grad_clip: float | None = Field(None, gt=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on CUDA (fp16 where bf16 is missing), bf16 on CPUs with native bf16, else fp32"
    )
    device: str = device_field()
    seed: int = 0
    patience: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="epochs without improvement of the validation metric before stopping; auto: ~500 steps"
    )
    warmup: Annotated[float, Field(gt=0, lt=1)] | Literal["auto"] = Field(
        "auto", description="onecycle's share of steps warming up; auto: a quarter, at most ~500 steps"
    )
    num_workers: int = Field(0, ge=0)
    progress: bool = True
    augment: list[AugmentStep] = Field(default_factory=list)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    sync_batchnorm: bool = Field(
        False, description="with several processes, batch norm statistics over the global batch (CUDA only)"
    )
    freeze_backbone_epochs: int = Field(0, ge=0, description="train only the head for the first N epochs")
    backbone_lr_mult: float = Field(1.0, gt=0, le=1, description="the backbone's learning rate: lr x this")

    @model_validator(mode="after")
    def _batch_splits_across_processes(self) -> TrainConfig:
        world = self.distributed.world_size
        if isinstance(self.batch_size, int) and self.batch_size % world:
            raise ValueError(
                f"batch_size ({self.batch_size}) is the global batch and must divide evenly among "
                f"distributed.nproc_per_node x distributed.nnodes = {world} processes"
            )
        if world > 1 and re.fullmatch(r"cuda:\d+", self.device):
            raise ValueError(f"device '{self.device}' names one GPU; with several processes use 'cuda' or 'auto'")
        if world > 1 and self.freeze_backbone_epochs:
            raise ValueError("freeze_backbone_epochs is not supported with several processes (distributed) yet")
        return self

    def augmentation(self) -> Any | None:
        """The declared augmentation as one `v2.Compose`, or None when none is declared."""
        from torchvision.transforms import v2

        steps = [step.build() for step in self.augment]
        return v2.Compose(steps) if steps else None


class EvaluateConfig(Strict):
    batch_size: int = Field(256, ge=1)


class PromoteConfig(Strict):
    """The gate a candidate must pass to become the production model."""

    min: dict[str, float] = Field(default_factory=dict, description="test metric -> lowest acceptable value")
    max: dict[str, float] = Field(default_factory=dict, description="test metric -> highest acceptable value")
    min_delta: float = Field(0.0, ge=0, description="required gain of the primary metric over production (0: any gain)")
    serving_check_samples: int = Field(32, ge=1, description="test inputs the served candidate must answer")
    tolerance: float = Field(1e-4, ge=0, description="largest confidence difference served vs offline")
    export_onnx: bool = Field(
        True, description="store the promoted model's ONNX export in its store version (where it exports)"
    )


TUNABLE_SECTIONS = ("model", "train")


def with_overrides(section: BaseModel, overrides: dict[str, Any]) -> Any:
    """A task section with values replaced at dotted key paths (`train.lr`, `train.augment.0.args.degrees`);
    raises ConfigError naming the key when a path does not exist or a value is invalid there."""
    grouped: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head not in TUNABLE_SECTIONS or not rest:
            raise ConfigError(f"{key}: only {', '.join(s + '.<key>' for s in TUNABLE_SECTIONS)} keys can be tuned")
        grouped.setdefault(head, {})[rest] = value
    updates = {name: _replace(getattr(section, name), name, values) for name, values in grouped.items()}
    return section.model_copy(update=updates)


def _replace(model: BaseModel, prefix: str, values: dict[str, Any]) -> BaseModel:
    data = model.model_dump(mode="json", by_alias=True)
    for path, value in values.items():
        parts = path.split(".")
        node = data
        for part in parts[:-1]:
            node = _child(node, part, f"{prefix}.{path}")
        _child(node, parts[-1], f"{prefix}.{path}")  # the leaf must exist: a typo must not add an ignored key
        node[int(parts[-1]) if isinstance(node, list) else parts[-1]] = value
    try:
        return type(model).model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"{prefix}.{_key_path(err['loc'])}: {err['msg']} (got {err['input']!r})") from None


def value_at(section: BaseModel, key: str) -> Any:
    """The value at a dotted key path of a task section (`train.lr`)."""
    node: Any = section.model_dump(mode="json", by_alias=True)
    for part in key.split("."):
        node = _child(node, part, key)
    return node


def load_overrides(path: Path) -> dict[str, Any]:
    """The `overrides` mapping of a tuned-values file (see the tune stage); empty when the file is absent."""
    if not path.exists():
        return {}
    data = read_yaml(path) or {}
    overrides = data.get("overrides", {}) if isinstance(data, dict) else None
    if not isinstance(overrides, dict):
        raise ConfigError(f"{path}: 'overrides' must be a mapping of key path -> value")
    return overrides


def _child(node: Any, part: str, key: str) -> Any:
    try:
        return node[int(part)] if isinstance(node, list) else node[part]
    except (KeyError, IndexError, ValueError, TypeError):
        raise ConfigError(f"{key}: no such key in the task's config ('{part}' not found)") from None


def _key_path(loc: tuple[int | str, ...]) -> str:
    parts = [f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc]
    return "".join(parts).lstrip(".")


def read_yaml(path: Path) -> Any:
    """A YAML file as DVC writes it (YAML 1.2: `yes`, `no`, `on` and `off` are strings, as `dvc exp run -S`
    leaves them unquoted); ConfigError naming the file when it is missing or malformed."""
    from ruamel.yaml import YAML, YAMLError

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    try:
        return YAML(typ="safe", pure=True).load(text)
    except YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None


def validation_errors(e: ValidationError, prefix: str = "") -> list[str]:
    """One line per error: the key path (under `prefix`, e.g. a task's name), what was wrong and the value given."""
    lines = []
    for err in e.errors():
        got = f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(err["input"], dict) else ""
        path = ".".join(p for p in (prefix, _key_path(err["loc"]) if err["loc"] else "") if p) or "(top level)"
        lines.append(f"  {path}: {err['msg']}{got}")
    return lines
