"""The task registry, as in timm: each built-in task package registers its TaskSpec when imported;
`get_task`, `list_tasks` and `capabilities` read it, and `section_schema` gives a task's params.yaml schema."""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any, cast

from pydantic import BaseModel, Field, create_model, model_validator

from lifecycle.config import (
    EvaluateConfig,
    PromoteConfig,
    Strict,
    TrainConfig,
)
from lifecycle.operations import ServeConfig
from lifecycle.tasks.parts import Task, TaskSpec
from lifecycle.tuning import TuneConfig, check_search_space

BUILTIN = ("classify", "detect", "ocr", "asr")  # packages under lifecycle.tasks, imported on first lookup
_REGISTRY: dict[str, TaskSpec] = {}

__all__ = [
    "Task",
    "TaskSpec",
    "build_task",
    "capabilities",
    "get_task",
    "list_tasks",
    "register_task",
    "section_schema",
]


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task to the registry (a second spec under the same name is an error)."""
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"task '{spec.name}' is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def task_names() -> list[str]:
    """The names of every task, without importing any task package."""
    return sorted(set(BUILTIN) | set(_REGISTRY))


def list_tasks() -> list[str]:
    for name in BUILTIN:
        get_task(name)
    return sorted(_REGISTRY)


def get_task(name: str) -> TaskSpec:
    """A task's spec; a built-in task's package is imported on first lookup (only that one)."""
    if name not in _REGISTRY and name in BUILTIN:
        importlib.import_module(f"lifecycle.tasks.{name}")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown task '{name}'; registered: {task_names()}") from None


def capabilities() -> dict[str, list[str]]:
    """What each registered task can do (labeling, masks, streaming, ...), without building any."""
    return {name: sorted(get_task(name).capabilities) for name in list_tasks()}


@cache
def section_schema(name: str) -> type[BaseModel]:
    """The schema of one task's section of params.yaml: its own collect, validate, split and model settings plus
    the generic stages."""
    schemas = get_task(name).schemas
    collect, model, validate = schemas.collect, schemas.model, schemas.validate
    return create_model(
        f"{name.capitalize()}Params",
        __base__=Strict,
        collect=(collect, Field(default_factory=collect)),
        validation=(validate, Field(default_factory=validate, alias="validate")),
        split=(schemas.split, Field(default_factory=schemas.split)),
        model=(model, Field(default_factory=model)),
        train=(TrainConfig, Field(default_factory=TrainConfig)),
        tune=(TuneConfig, Field(default_factory=TuneConfig)),
        evaluate=(EvaluateConfig, Field(default_factory=EvaluateConfig)),
        promote=(PromoteConfig, Field(default_factory=PromoteConfig)),
        serve=(ServeConfig, Field(default_factory=ServeConfig)),
        __validators__={
            "_space_keys": cast(Any, model_validator(mode="after")(check_search_space)),
            **({"_task_check": cast(Any, model_validator(mode="after")(schemas.check))} if schemas.check else {}),
        },
    )


def build_task(name: str, section: Any) -> Task:
    """A configured task from a section of params.yaml (a mapping, validated here, or an already validated one)."""
    schema = section_schema(name)
    cfg = section if isinstance(section, schema) else schema.model_validate(section)
    return get_task(name).configure(cfg)
