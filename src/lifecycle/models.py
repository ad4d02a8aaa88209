"""The trained-model file: weights plus everything needed to rebuild the task and its model from it alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from lifecycle.atomic import atomic_path
from lifecycle.tasks import Task, build_task


def save_model(path: Path, task: Task, state_dict: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    payload = {
        "task": task.name,
        "config": task.cfg.model_dump(mode="json", by_alias=True),
        "state_dict": state_dict,
        "info": info,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _read(path: Path, device: torch.device | str, mmap: bool = False) -> dict[str, Any]:
    try:
        return torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise FileNotFoundError(f"no trained model at {path}; run the train stage first") from None


def _task_of(payload: dict[str, Any]) -> Task:
    return build_task(payload["task"], payload["config"])


class IncompatibleModel(ValueError):
    """A model file this code cannot rebuild: its config or weights no longer match the task's model code."""


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[Task, nn.Module, dict[str, Any]]:
    """(task, model in eval mode, info) from a model file; loads tensors only (`weights_only=True`)."""
    payload = _read(path, device)
    try:
        task = _task_of(payload)
        model = task.network.build()
        model.load_state_dict(payload["state_dict"])
    except (ValidationError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0]
        raise IncompatibleModel(
            f"{path}: trained by code whose '{payload['task']}' model differs from this code's "
            f"({first}); retrain it, or serve it with the code it was trained with"
        ) from e
    return task, model.to(device).eval(), payload["info"]


def load_task(path: Path) -> Task:
    """The task, configured as the model in `path` was trained, without loading its weights into memory."""
    return _task_of(_read(path, "cpu", mmap=True))
