"""A model loaded for serving: decoded inputs in, post-processed predictions out. The service and the
promotion's serving check both go through this class, so what is checked is what is served."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lifecycle.models import load_model
from lifecycle.registry import StoredModel
from lifecycle.tasks.base import Task
from lifecycle.trainer import AmpStep, resolve_device, resolve_precision


class Predictor:
    def __init__(self, task: Task, model: torch.nn.Module, device: torch.device, tag: str) -> None:
        self.task = task
        self.model = model.eval()
        self.device = device
        self.tag = tag
        self.amp = AmpStep(device, resolve_precision(task.cfg.train.precision, device))
        self.transform = task.transform(train=False)

    @classmethod
    def from_store(cls, stored: StoredModel, device: str = "auto") -> Predictor:
        resolved = resolve_device(device)
        task, model, _ = load_model(stored.model_file, resolved)
        return cls(task, model, resolved, stored.tag)

    @torch.no_grad()
    def predict(self, raw_inputs: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
        """Predictions for decoded inputs (as `Task.load_input` returns them), one batch."""
        batch = self.task.batch_inputs([self.transform(x, None)[0] for x in raw_inputs]).to(self.device)
        with self.amp.autocast():
            outputs = self.task.forward(self.model, batch)
        return self.task.predict(outputs)
