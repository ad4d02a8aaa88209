"""The task registry: `@register_task` fills it, `get_task` and `list_tasks` read it."""

from __future__ import annotations

import importlib

from lifecycle.tasks.base import InvalidSample, RawSample, Rejected, Task

_BUILTIN_MODULES = ("lifecycle.tasks.classify", "lifecycle.tasks.detect", "lifecycle.tasks.ocr", "lifecycle.tasks.asr")
_REGISTRY: dict[str, type[Task]] = {}

__all__ = ["InvalidSample", "RawSample", "Rejected", "Task", "get_task", "list_tasks", "register_task"]


def register_task(name: str):
    """Class decorator that registers a Task subclass under `name`."""

    def decorate(cls: type[Task]) -> type[Task]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"task '{name}' is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _load_builtin() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def list_tasks() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_task(name: str) -> type[Task]:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown task '{name}'; registered: {sorted(_REGISTRY)}") from None
