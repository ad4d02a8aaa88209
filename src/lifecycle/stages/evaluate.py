"""Evaluate: the trained model's metrics on the test split, its predictions, the task's pictures, and the drift
reference (the test split as the model sees it: descriptors, predictions, embeddings) it will be monitored against."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from lifecycle.atomic import write_json, write_jsonl
from lifecycle.data import ManifestDataset, make_loader, rows_of_split
from lifecycle.devices import resolve_device, resolve_precision
from lifecycle.models import load_model
from lifecycle.monitoring import REFERENCE, write_test_reference
from lifecycle.paths import TaskPaths
from lifecycle.serving import Predictor
from lifecycle.tasks import Task
from lifecycle.tasks.parts import Source
from lifecycle.trainer import AmpStep, run_eval

GROUPS = "groups.json"  # the test metrics per group, by grouping
ROBUSTNESS_SEED = 0  # the distortions drawn for the test split: the same every evaluation


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
    dataset = ManifestDataset(task.codec, rows, paths.raw, train=False)
    return run_dataset(task, model, dataset, device, batch_size, predict=True)


def run_dataset(
    task: Task, model: torch.nn.Module, dataset: ManifestDataset, device: torch.device, batch_size: int, predict: bool
) -> tuple[float, dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Mean loss, computed metrics and, with `predict`, post-processed predictions of `model` over a dataset."""
    loader = make_loader(task.codec, dataset, batch_size, shuffle=False)
    amp = AmpStep(device, resolve_precision(task.cfg.train.precision, device))
    return run_eval(task.network, model, loader, device, amp, predict=task.outputs if predict else None)


def scalar_metrics(
    task: Task, model: torch.nn.Module, dataset: ManifestDataset, device: torch.device
) -> tuple[dict[str, float], dict[str, Any]]:
    """The metrics of `model` over a dataset as (scalars, per-class tables), with the loss; no predictions kept."""
    loss, values, _ = run_dataset(task, model, dataset, device, task.cfg.evaluate.batch_size, predict=False)
    scalars, per_class = metric_values(task.source, values)
    return {**scalars, "loss": loss}, per_class


def group_metrics(
    task: Task, model: torch.nn.Module, rows: list[dict[str, Any]], paths: TaskPaths, device: torch.device
) -> tuple[dict[str, Any], dict[str, float]]:
    """The test metrics per group of each grouping the source names (a voice, an accent, a font family), with
    whether training saw the group; and, per grouping whose test groups include some training never saw, the
    primary metric over those samples alone (`unseen_<grouping>_<metric>`): how the model generalises."""
    source, primary = task.source, task.goal.metric
    seen: dict[str, set[str]] = defaultdict(set)
    for row in rows_of_split(paths.split_manifest, "train"):
        for grouping, group in source.groupings(row).items():
            seen[grouping].add(group)
    members: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for grouping, group in source.groupings(row).items():
            members[grouping][group].append(row)

    def scores(subset: list[dict[str, Any]]) -> dict[str, float]:
        scalars = scalar_metrics(task, model, ManifestDataset(task.codec, subset, paths.raw, train=False), device)[0]
        return {name: value for name, value in scalars.items() if name != "loss"}

    groups: dict[str, Any] = {}
    unseen: dict[str, float] = {}
    for grouping, by_group in members.items():
        groups[grouping] = {
            group: {**scores(subset), "samples": len(subset), "seen_in_training": group in seen[grouping]}
            for group, subset in sorted(by_group.items())
        }
        new = [row for group, subset in by_group.items() if group not in seen[grouping] for row in subset]
        if new:
            unseen[f"unseen_{grouping}_{primary}"] = scores(new)[primary]
    return groups, unseen


def run(task: Task, paths: TaskPaths) -> dict[str, Any]:
    return evaluate(task, paths)


def evaluate(
    task: Task, paths: TaskPaths, model_file: Path | None = None, out_dir: Path | None = None
) -> dict[str, Any]:
    """The trained model's (or another model file's, such as a stored candidate's) test metrics, predictions,
    per-class and per-group metrics, pictures and drift reference, under reports/<task>/evaluate (or `out_dir`)."""
    device = resolve_device(task.cfg.train.device)
    # The model file carries the task config it was trained with: its preprocessing is the one to use.
    model_task, model, _ = load_model(model_file or paths.model, device)
    rows = rows_of_split(paths.split_manifest, "test")
    loss, values, predictions = predict_rows(model_task, model, rows, paths, device, task.cfg.evaluate.batch_size)
    scalars, per_class = metric_values(model_task.source, values)
    out_dir = out_dir or paths.reports("evaluate")
    extra = model_task.reports.report(
        predictions,
        [row["label"] for row in rows],
        [paths.raw / row["path"] for row in rows],
        out_dir / "figures",
        model,
    )
    groups, unseen = group_metrics(model_task, model, rows, paths, device)
    held_out, held_out_per_class = robustness_metrics(model_task, model, rows, paths, device)
    metrics = {
        **scalars,
        **unseen,
        **held_out,
        **extra,
        "loss": loss,
        "test_samples": len(rows),
        "primary_metric": task.goal.metric,
    }
    per_class.update(held_out_per_class)
    write_jsonl(
        out_dir / "predictions.jsonl",
        (
            {"sample_id": row["sample_id"], "truth": row["label"], "prediction": pred}
            for row, pred in zip(rows, predictions, strict=True)
        ),
    )
    write_json(out_dir / "per_class.json", per_class)
    write_json(out_dir / GROUPS, groups)
    predictor = Predictor(model_task, model, device, tag="candidate")
    write_test_reference(predictor, paths, task.cfg.evaluate.batch_size, out_dir / REFERENCE)
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def robustness_metrics(
    task: Task, model: torch.nn.Module, rows: list[dict[str, Any]], paths: TaskPaths, device: torch.device
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Leave-one-family-out: the metrics over the test split distorted by the family of distortions the model's
    split held out of training (classify: `split.robustness`), as ({robustness_family, robustness_<metric>...},
    {robustness_<metric>: per class}); two empty dicts when it holds none out."""
    held_out = task.codec.held_out_distortion()
    if held_out is None:
        return {}, {}
    family, distort = held_out
    dataset = ManifestDataset(task.codec, rows, paths.raw, train=False)
    generator = torch.Generator().manual_seed(ROBUSTNESS_SEED)
    dataset.inputs = [distort(image, generator) for image in dataset.inputs]
    scalars, per_class = scalar_metrics(task, model, dataset, device)
    prefixed = {f"robustness_{name}": value for name, value in scalars.items()}
    return {"robustness_family": family, **prefixed}, {f"robustness_{k}": v for k, v in per_class.items()}
