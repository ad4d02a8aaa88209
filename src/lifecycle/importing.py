"""Use an existing model directly: its architecture and weights, head included, stored as a candidate version of
the task's model in the BentoML store; `lifecycle promote --candidate TAG` then evaluates it on the test split and
gates it exactly like a trained one."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from lifecycle import registry
from lifecycle.config import with_overrides
from lifecycle.data import ManifestDataset, rows_of_split
from lifecycle.models import save_model
from lifecycle.paths import TaskPaths
from lifecycle.tasks import Task
from lifecycle.weights import read_weights


def import_model(task: Task, paths: TaskPaths, arch: str, weights: str) -> dict[str, Any]:
    """Store `weights` (a file or a torchvision weights name) for architecture `arch` as a candidate version of the
    task's model; its head must already classify the task's classes. Returns what was imported and its tag.
    Normalisation comes from the weights, else params, else the training split (`paths`' split manifest)."""
    task = task.with_config(with_overrides(task.cfg, {"model.arch": arch, "model.weights": weights}))
    stored = read_weights(weights)
    classes = list(task.source.label_set() or [])
    own_classes = ((stored.config or {}).get("collect") or {}).get("classes")
    if own_classes is not None and list(own_classes) != classes:
        raise ValueError(f"{weights} classifies {own_classes}; collect.classes is {classes}: they must be equal")
    train_set = ManifestDataset(task.codec, rows_of_split(paths.split_manifest, "train"), paths.raw, train=False)
    fitted = task.codec.fit(train_set.inputs)  # normalisation: the weights' own, else params, else the data's
    task = task.with_config(with_overrides(task.cfg, {f"model.{k}": v for k, v in fitted.items()}))
    try:
        model, report = task.network.pretrained(keep_head=True)
    except ValueError as e:
        raise ValueError(
            f"import keeps the file's head, which must have one output per class of {classes}: {e}"
        ) from None
    info = {"imported_from": stored.origin, "initial_weights": report, "primary_metric": task.goal.metric}
    with tempfile.TemporaryDirectory(prefix=f"lifecycle-import-{task.name}-") as tmp:
        model_file = Path(tmp) / registry.MODEL_FILE
        save_model(model_file, task, model.state_dict(), info)
        candidate = registry.store_candidate(task.name, model_file, {"imported_from": stored.origin, "arch": arch})
    return {
        "candidate": candidate.tag,
        "arch": arch,
        **info,
        "normalize": task.cfg.model.model_dump(mode="json").get("normalize"),
    }
