"""params.yaml as a typed config: the generic sections (`tasks`, `serving`, `monitoring`) and one section per
task. Only the sections a command asks for are validated (`lifecycle split --task classify` never scans fonts
or lists voices); an unknown key or a bad value stops the command before any work, naming the key."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from lifecycle.config import ConfigError, Strict, read_yaml, validation_errors
from lifecycle.operations import MonitoringConfig, ServingConfig
from lifecycle.tasks import section_schema, task_names


class Generic(Strict):
    tasks: list[str] = Field(min_length=1)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)

    @field_validator("tasks")
    @classmethod
    def _registered(cls, tasks: list[str]) -> list[str]:
        if unknown := sorted(set(tasks) - set(task_names())):
            raise ValueError(f"unknown task(s) {unknown}; registered: {task_names()}")
        return tasks

    @model_validator(mode="after")
    def _unique(self) -> Generic:
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks are listed more than once: {self.tasks}")
        return self


@dataclass
class Params:
    """A validated params.yaml. `task(name)` validates a task's section on first use."""

    tasks: list[str]
    serving: ServingConfig
    monitoring: MonitoringConfig
    raw_sections: dict[str, Any]
    source: str = "params.yaml"
    _validated: dict[str, Any] = field(default_factory=dict, repr=False)

    def task(self, name: str) -> Any:
        if name not in self._validated:
            if name not in self.raw_sections:
                raise ConfigError(f"{self.source}: no section for task '{name}'")
            try:
                self._validated[name] = section_schema(name).model_validate(self.raw_sections[name] or {})
            except ValidationError as e:
                lines = validation_errors(e, prefix=name)
                raise ConfigError(f"{self.source}: {len(lines)} invalid value(s)\n" + "\n".join(lines)) from None
        return self._validated[name]


def parse_params(raw: Any, source: str = "params.yaml", only: Sequence[str] | None = None) -> Params:
    """Validate an already-parsed params mapping: the generic sections, and the sections of `only` (default:
    every task in `tasks`)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    sections = {k: v for k, v in raw.items() if k not in Generic.model_fields}
    problems = [f"  {k}: not a registered task or a known section" for k in sections if k not in task_names()]
    try:
        generic = Generic.model_validate({k: v for k, v in raw.items() if k in Generic.model_fields})
    except ValidationError as e:
        raise ConfigError(f"{source}: invalid value(s)\n" + "\n".join(validation_errors(e) + problems)) from None
    problems += [
        f"  {t}: no section for task '{t}': add a top-level key for it" for t in generic.tasks if t not in sections
    ]
    if problems:
        raise ConfigError(f"{source}: {len(problems)} invalid value(s)\n" + "\n".join(problems))
    params = Params(generic.tasks, generic.serving, generic.monitoring, sections, source)
    for name in generic.tasks if only is None else only:
        params.task(name)
    return params


def load_params(path: Path | str = "params.yaml", only: Sequence[str] | None = None) -> Params:
    """Read params.yaml (as DVC writes it: YAML 1.2) and validate the sections of `only` (default: every task)."""
    return parse_params(read_yaml(Path(path)), str(path), only)
