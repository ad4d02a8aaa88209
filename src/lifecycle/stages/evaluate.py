"""Evaluate: the trained model's metrics on the test split, its predictions, the task's pictures, and the drift
reference (the test split as the model sees it: descriptors, predictions, embeddings) it will be monitored against."""

from __future__ import annotations

import math
from typing import Any

import torch

from lifecycle.atomic import write_json, write_jsonl
from lifecycle.data import ManifestDataset, make_loader, rows_of_split
from lifecycle.devices import resolve_device, resolve_precision
from lifecycle.models import load_model
from lifecycle.monitoring import REFERENCE, write_test_reference
from lifecycle.paths import TaskPaths
from lifecycle.serving import Predictor
from lifecycle.stages.robustness import robustness_metrics
from lifecycle.tasks import Task
from lifecycle.tasks.parts import Source
from lifecycle.trainer import AmpStep, run_eval


def metric_values(source: Source, values: dict[str, torch.Tensor]) -> tuple[dict[str, float], dict[str, Any]]:
    """Split computed metrics into scalars and per-class tables keyed by class name."""
    classes = source.label_set()
    scalars: dict[str, float] = {}
    per_class: dict[str, Any] = {}
    for name, value in values.items():
        if value.numel() == 1:
            scalars[name] = float(value)
        elif classes is not None and value.numel() == len(classes):
            per_class[name.removeprefix("per_class_")] = dict(zip(classes, _finite(value)))
        else:
            per_class[name] = _finite(value)
    return scalars, per_class


def _finite(values: torch.Tensor) -> list[float | None]:
    """Values as JSON numbers; NaN (a class the test split does not hold, say) as null."""
    return [None if math.isnan(v) else v for v in values.flatten().tolist()]


def predict_rows(
    task: Task,
    model: torch.nn.Module,
    rows: list[dict[str, Any]],
    paths: TaskPaths,
    device: torch.device,
    batch_size: int,
) -> tuple[float, dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Mean loss, computed metrics and post-processed predictions of `model` over manifest rows."""
    codec = task.codec
    loader = make_loader(codec, ManifestDataset(codec, rows, paths.raw, train=False), batch_size, shuffle=False)
    amp = AmpStep(device, resolve_precision(task.cfg.train.precision, device))
    return run_eval(task.network, model, loader, device, amp, predict=task.outputs)


def run(task: Task, paths: TaskPaths) -> dict[str, Any]:
    return evaluate(task, paths)


def evaluate(task: Task, paths: TaskPaths) -> dict[str, Any]:
    device = resolve_device(task.cfg.train.device)
    # The model file carries the task config it was trained with: its preprocessing is the one to use.
    model_task, model, _ = load_model(paths.model, device)
    rows = rows_of_split(paths.split_manifest, "test")
    loss, values, predictions = predict_rows(model_task, model, rows, paths, device, task.cfg.evaluate.batch_size)
    scalars, per_class = metric_values(model_task.source, values)
    out_dir = paths.reports("evaluate")
    extra = model_task.reports.report(
        predictions,
        [row["label"] for row in rows],
        [paths.raw / row["path"] for row in rows],
        out_dir / "figures",
        model,
    )
    metrics = {**scalars, **extra, "loss": loss, "test_samples": len(rows), "primary_metric": task.goal.metric}
    held_out, held_out_per_class = robustness_metrics(
        model_task, model, rows, paths, device, task.cfg.evaluate.batch_size
    )
    metrics.update(held_out)
    per_class.update(held_out_per_class)
    write_jsonl(
        out_dir / "predictions.jsonl",
        (
            {"sample_id": row["sample_id"], "truth": row["label"], "prediction": pred}
            for row, pred in zip(rows, predictions, strict=True)
        ),
    )
    write_json(out_dir / "per_class.json", per_class)
    predictor = Predictor(model_task, model, device, tag="candidate")
    write_test_reference(predictor, paths, task.cfg.evaluate.batch_size, out_dir / REFERENCE)
    write_json(out_dir / "metrics.json", metrics)
    return metrics
