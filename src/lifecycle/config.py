"""params.yaml -> a typed, validated config. An unknown key or a bad value stops the run before any work,
with a message naming the key path and what was expected."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator


class ConfigError(ValueError):
    """params.yaml is unreadable or does not match the schema."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class TrainConfig(Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only")
    scheduler: Literal["onecycle", "cosine", "constant"] = "onecycle"
    grad_clip: float | None = Field(None, gt=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on CUDA (fp16 where bf16 is missing), bf16 on CPUs with native bf16, else fp32"
    )
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    seed: int = 0
    patience: int = Field(5, ge=1, description="epochs without improvement of the validation metric before stopping")
    num_workers: int = Field(0, ge=0)
    progress: bool = True
    augment: list[AugmentStep] = Field(default_factory=list)

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


@cache
def task_schema(task: str) -> type[BaseModel]:
    """The schema of one task's section: its own collect and model settings plus the generic stages."""
    from lifecycle.tasks import get_task

    collect, model = get_task(task).CollectConfig, get_task(task).ModelConfig
    return create_model(
        f"{task.capitalize()}Params",
        __base__=Strict,
        collect=(collect, Field(default_factory=collect)),
        validation=(ValidateConfig, Field(default_factory=ValidateConfig, alias="validate")),
        split=(SplitConfig, Field(default_factory=SplitConfig)),
        model=(model, Field(default_factory=model)),
        train=(TrainConfig, Field(default_factory=TrainConfig)),
        evaluate=(EvaluateConfig, Field(default_factory=EvaluateConfig)),
        promote=(PromoteConfig, Field(default_factory=PromoteConfig)),
    )


@cache
def params_schema() -> type[BaseModel]:
    """The root model: `tasks` (which tasks the pipeline runs) plus one section per registered task."""
    from lifecycle.tasks import list_tasks

    sections = {name: (task_schema(name) | None, None) for name in list_tasks()}

    class Root(Strict):
        tasks: list[str] = Field(min_length=1)

        @field_validator("tasks")
        @classmethod
        def _registered(cls, tasks: list[str]) -> list[str]:
            unknown = sorted(set(tasks) - set(list_tasks()))
            if unknown:
                raise ValueError(f"unknown task(s) {unknown}; registered: {list_tasks()}")
            return tasks

        @model_validator(mode="after")
        def _sections_present(self) -> Root:
            missing = [t for t in self.tasks if getattr(self, t) is None]
            if missing:
                raise ValueError(f"no section for task(s) {missing}: add a top-level key for each")
            return self

        def task(self, name: str) -> Any:
            section = getattr(self, name, None)
            if section is None:
                raise ConfigError(f"params: no section for task '{name}'")
            return section

    return create_model("Params", __base__=Root, **sections)


def _key_path(loc: tuple[int | str, ...]) -> str:
    parts = [f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc]
    return "".join(parts).lstrip(".") or "(top level)"


def parse_params(raw: Any, source: str = "params.yaml") -> Any:
    """Validate an already-parsed params mapping."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return params_schema().model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            got = f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(err["input"], dict) else ""
            lines.append(f"  {_key_path(err['loc'])}: {err['msg']}{got}")
        raise ConfigError(f"{source}: {len(lines)} invalid value(s)\n" + "\n".join(lines)) from None


def load_params(path: Path | str = "params.yaml") -> Any:
    """Read and validate params.yaml."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return parse_params(raw, str(path))
