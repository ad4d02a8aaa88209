"""Train: fit the task's model on the train split, early-stopping on the validation split."""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader

from lifecycle.atomic import write_json
from lifecycle.config import load_overrides, with_overrides
from lifecycle.data import ManifestDataset, make_loader, rows_of_split
from lifecycle.models import save_model
from lifecycle.paths import TaskPaths
from lifecycle.stepplan import plan_steps
from lifecycle.tasks import Task
from lifecycle.trainer import EpochLog, Trainer

log = logging.getLogger(__name__)
PREVIEW_SAMPLES = 32


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fingerprint(definition: dict[str, Any], manifest: Path) -> str:
    """A digest of a JSON-able definition and the exact split manifest it runs on."""
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode())
    digest.update(manifest.read_bytes())
    return digest.hexdigest()


def run_fingerprint(task: Task, paths: TaskPaths) -> str:
    """Identifies a training run: the task's whole config and the exact split manifest."""
    return fingerprint(task.cfg.model_dump(mode="json"), paths.split_manifest)


def build_loaders(task: Task, paths: TaskPaths) -> tuple[Task, DataLoader, DataLoader]:
    """Train (shuffled, augmented) and validation loaders over the split manifest, and the task with the model
    values its codec derives from the training split (normalisation statistics, say)."""
    cfg = task.cfg.train
    train_set = ManifestDataset(task.codec, rows_of_split(paths.split_manifest, "train"), paths.raw, train=True)
    val_set = ManifestDataset(task.codec, rows_of_split(paths.split_manifest, "val"), paths.raw, train=False)
    fitted = task.codec.fit(train_set.inputs)
    if fitted:
        task = task.with_config(with_overrides(task.cfg, {f"model.{k}": v for k, v in fitted.items()}))
        train_set.transform, val_set.transform = task.codec.transform(train=True), task.codec.transform(train=False)
    codec = task.codec
    batch_size = plan_steps(cfg, len(train_set), len(val_set)).batch_size
    train_loader = make_loader(codec, train_set, batch_size, shuffle=True, num_workers=cfg.num_workers, seed=cfg.seed)
    val_loader = make_loader(codec, val_set, task.cfg.evaluate.batch_size, shuffle=False, num_workers=cfg.num_workers)
    return task, train_loader, val_loader


def run(task: Task, paths: TaskPaths) -> dict[str, Any]:
    return train(task, paths)


def train(task: Task, paths: TaskPaths) -> dict[str, Any]:
    """Fit with params.yaml's settings, overridden by the tune stage's best values when it found any."""
    from dvclive import Live

    tuned = load_overrides(paths.tuned)
    task = task.with_config(with_overrides(task.cfg, tuned))
    cfg = task.cfg.train
    seed_everything(cfg.seed)
    task, train_loader, val_loader = build_loaders(task, paths)
    train_set, val_set = cast(ManifestDataset, train_loader.dataset), cast(ManifestDataset, val_loader.dataset)
    plan = plan_steps(cfg, len(train_set), len(val_set))
    for warning in plan.warnings:
        log.warning("%s: %s", task.name, warning)
    model, loaded = task.network.pretrained()
    if loaded:
        log.info("%s initial weights: %s", task.name, loaded)
    report_dir = paths.reports("train")
    with torch.random.fork_rng():  # the preview must not shift the training run's random stream
        task.reports.preview(
            [train_set[i] for i in range(min(PREVIEW_SAMPLES, len(train_set)))], report_dir / "augmented.png"
        )

    trainer = Trainer(task.network, task.goal, cfg, paths.checkpoint, run_fingerprint(task, paths), task.name)
    with Live(dir=str(report_dir / "live"), save_dvc_exp=False, dvcyaml=None) as live:

        def log_epoch(entry: EpochLog) -> None:
            live.step = entry.epoch - 1
            live.log_metric("train/loss", entry.train_loss)
            live.log_metric("val/loss", entry.val_loss)
            for name, value in entry.val_metrics.items():
                live.log_metric(f"val/{name}", value)
            live.log_metric("lr", entry.lr)
            live.log_metric("samples_per_second", entry.samples_per_second)
            live.make_summary()

        result = trainer.fit(model, train_loader, val_loader, on_epoch=log_epoch)

    summary = {
        f"best_val_{task.goal.metric}": result.best_metric,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "resumed_from_epoch": result.resumed_from_epoch,
        "device": result.device,
        "precision": result.precision,
        "train_samples": len(train_set),
        "val_samples": len(val_set),
        "samples_per_second": float(np.median([h.samples_per_second for h in result.history])),
        "tuned": tuned,
        "model": task.cfg.model.model_dump(mode="json"),
        "initial_weights": loaded,
        "steps": plan.as_dict(),
        "warnings": plan.warnings,
    }
    save_model(paths.model, task, result.best_state_dict, {**summary, "primary_metric": task.goal.metric})
    write_json(report_dir / "summary.json", summary)
    return summary
