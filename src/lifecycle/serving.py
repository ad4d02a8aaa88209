"""A model loaded for answering: prepared inputs in, post-processed predictions and input embeddings out.
The BentoML service, batch inference (`lifecycle predict`) and the promotion's serving check all go through
this class, so what is checked is what is served."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lifecycle.devices import autocast, resolve_device, resolve_precision, to_device
from lifecycle.models import load_model
from lifecycle.registry import StoredModel
from lifecycle.tasks import Task


@dataclass(frozen=True)
class Answer:
    prediction: dict[str, Any]  # the task's JSON answer for one input
    embedding: list[float]  # a low-dimensional view of the model's features of that input, for drift monitoring


class Predictor:
    def __init__(self, task: Task, model: torch.nn.Module, device: torch.device, tag: str) -> None:
        self.task = task
        self.model = model.eval()
        self.device = device
        self.tag = tag
        self.embedding_dims = task.cfg.serve.embedding_dims  # as trained: the model's drift reference uses it
        self.precision = resolve_precision(task.cfg.train.precision, device)
        self._projections: dict[int, torch.Tensor] = {}

    @classmethod
    def from_file(cls, model_file: Path, tag: str, device: str = "auto") -> Predictor:
        resolved = resolve_device(device)
        task, model, _ = load_model(model_file, resolved)
        return cls(task, model, resolved, tag)

    @classmethod
    def from_store(cls, stored: StoredModel, device: str = "auto") -> Predictor:
        return cls.from_file(stored.model_file, stored.tag, device)

    @torch.no_grad()
    def infer(self, prepared: Sequence[Any]) -> list[Answer]:
        """Answers for a batch of prepared inputs (`Codec.prepare` of decoded inputs)."""
        batch = to_device(self.task.codec.batch_inputs(prepared), self.device)
        with autocast(self.device, self.precision):
            outputs, features = self.task.network.forward(self.model, batch)
        embeddings = self._project(features.float().flatten(1).cpu())
        predictions = self.task.outputs.predict(outputs)
        return [Answer(p, e) for p, e in zip(predictions, embeddings.tolist(), strict=True)]

    def predict(self, raw_inputs: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
        """Predictions for decoded inputs (as `Codec.decode` returns them), one batch."""
        return [a.prediction for a in self.infer([self.task.codec.prepare(x) for x in raw_inputs])]

    def _project(self, features: torch.Tensor) -> torch.Tensor:
        """A fixed random orthonormal projection (Johnson-Lindenstrauss) to `embedding_dims`: the same matrix in
        every process, so served embeddings and the training reference are comparable."""
        dims = features.shape[1]
        if dims <= self.embedding_dims:
            return features
        if dims not in self._projections:
            gaussian = torch.randn(dims, self.embedding_dims, generator=torch.Generator().manual_seed(dims))
            self._projections[dims] = torch.linalg.qr(gaussian).Q
        return features @ self._projections[dims]
