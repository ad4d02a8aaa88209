"""The evaluate stage's leave-one-family-out measure: the model on the test split distorted by the family of
distortions its split held out of training (classify: `split.robustness`), overall and per class."""

from __future__ import annotations

import math
from typing import Any

import torch

from lifecycle.data import ManifestDataset, make_loader
from lifecycle.devices import resolve_precision
from lifecycle.paths import TaskPaths
from lifecycle.tasks import Task
from lifecycle.trainer import AmpStep, run_eval

SEED = 0  # the distortions drawn for the test split: the same every evaluation


def robustness_metrics(
    task: Task, model: torch.nn.Module, rows: list[dict[str, Any]], paths: TaskPaths, device: torch.device, batch: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """({robustness_family, robustness_<metric>...}, {robustness_<metric>: per class}) for `task` as the model was
    trained (its codec names the held-out family); two empty dicts when it holds none out."""
    held_out = getattr(task.codec, "held_out_distortion", lambda: None)()
    if held_out is None:
        return {}, {}
    family, distort = held_out
    dataset = ManifestDataset(task.codec, rows, paths.raw, train=False)
    generator = torch.Generator().manual_seed(SEED)
    dataset.inputs = [distort(image, generator) for image in dataset.inputs]
    loader = make_loader(task.codec, dataset, batch, shuffle=False)
    amp = AmpStep(device, resolve_precision(task.cfg.train.precision, device))
    loss, values, _ = run_eval(task.network, model, loader, device, amp)
    classes = task.source.label_set()
    scalars: dict[str, Any] = {"robustness_family": family, "robustness_loss": loss}
    per_class: dict[str, Any] = {}
    for name, value in values.items():
        if value.numel() == 1:
            scalars[f"robustness_{name}"] = float(value)
        else:
            numbers = [None if math.isnan(v) else v for v in value.flatten().tolist()]
            key = f"robustness_{name.removeprefix('per_class_')}"
            per_class[key] = dict(zip(classes, numbers, strict=True)) if classes else numbers
    return scalars, per_class
