"""Train: fit the task's model on the train split, early-stopping on the validation split. With
`train.distributed` asking for several processes the stage runs this module's `worker_main` in each of them
through torchrun (data-parallel); process 0 writes the model, curves and summary."""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader

from lifecycle import distributed
from lifecycle.atomic import write_json
from lifecycle.config import load_overrides, with_overrides
from lifecycle.data import ManifestDataset, make_loader, rows_of_split
from lifecycle.models import save_model
from lifecycle.paths import TaskPaths
from lifecycle.runtime import configure_logging
from lifecycle.stepplan import plan_steps
from lifecycle.tasks import Task, build_task
from lifecycle.trainer import EpochLog, Trainer
from lifecycle.tuning import tuning_decision

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
    """Identifies a training run: the task's whole config and the exact split manifest. Of the distributed
    settings only the world size counts (it splits the batches); where the processes meet does not."""
    definition = task.cfg.model_dump(mode="json")
    definition["train"]["distributed"] = {"world_size": task.cfg.train.distributed.world_size}
    return fingerprint(definition, paths.split_manifest)


def build_loaders(task: Task, paths: TaskPaths) -> tuple[Task, DataLoader, DataLoader]:
    """Train (shuffled, augmented) and validation loaders over the split manifest, and the task with the model
    values its codec derives from the training split (normalisation statistics, say). In a data-parallel run the
    loaders give this process's shard, the batch size being the global batch."""
    cfg = task.cfg.train
    rank, world = distributed.rank(), distributed.world_size()
    train_set = ManifestDataset(task.codec, rows_of_split(paths.split_manifest, "train"), paths.raw, train=True)
    val_set = ManifestDataset(task.codec, rows_of_split(paths.split_manifest, "val"), paths.raw, train=False)
    fitted = task.codec.fit(train_set.inputs)
    if fitted:
        task = task.with_config(with_overrides(task.cfg, {f"model.{k}": v for k, v in fitted.items()}))
        train_set.transform, val_set.transform = task.codec.transform(train=True), task.codec.transform(train=False)
    codec, workers = task.codec, cfg.num_workers
    batch_size = plan_steps(cfg, len(train_set), len(val_set)).batch_size
    if batch_size % world:
        raise ValueError(
            f"{task.name}: the derived train.batch_size ({batch_size}) does not divide among {world} processes: "
            "set train.batch_size to a multiple of the world size"
        )
    train_loader = make_loader(
        codec, train_set, batch_size, shuffle=True, num_workers=workers, seed=cfg.seed, rank=rank, world=world
    )
    val_loader = make_loader(
        codec, val_set, task.cfg.evaluate.batch_size, shuffle=False, num_workers=workers, rank=rank, world=world
    )
    return task, train_loader, val_loader


def log_epoch(live: Any, entry: EpochLog) -> None:
    """One epoch's training curves in DVCLive."""
    live.step = entry.epoch - 1
    live.log_metric("train/loss", entry.train_loss)
    live.log_metric("val/loss", entry.val_loss)
    for name, value in entry.val_metrics.items():
        live.log_metric(f"val/{name}", value)
    live.log_metric("lr", entry.lr)
    live.log_metric("samples_per_second", entry.samples_per_second)
    live.make_summary()


def run(task: Task, paths: TaskPaths) -> dict[str, Any]:
    return train(task, paths)


def train(task: Task, paths: TaskPaths) -> dict[str, Any]:
    """Fit with params.yaml's settings, overridden by the tune stage's best values when it found any."""
    if task.cfg.train.distributed.world_size > 1 and not distributed.active():
        return train_distributed(task, paths)
    main = distributed.is_main()
    tuned, tuning = load_overrides(paths.tuned), tuning_decision(paths.tuned)
    if main:
        log.info("%s trains with %s", task.name, tuning)
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
    if main:
        with torch.random.fork_rng():  # the preview must not shift the training run's random stream
            task.reports.preview(
                [train_set[i] for i in range(min(PREVIEW_SAMPLES, len(train_set)))], report_dir / "augmented.png"
            )

    trainer = Trainer(task.network, task.goal, cfg, paths.checkpoint, run_fingerprint(task, paths), task.name)
    if not main:  # the other processes train alongside; process 0 writes
        trainer.fit(model, train_loader, val_loader)
        return {}
    from dvclive import Live

    with Live(dir=str(report_dir / "live"), save_dvc_exp=False, dvcyaml=None) as live:
        result = trainer.fit(model, train_loader, val_loader, on_epoch=functools.partial(log_epoch, live))

    summary = {
        f"best_val_{task.goal.metric}": result.best_metric,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "resumed_from_epoch": result.resumed_from_epoch,
        "device": result.device,
        "precision": result.precision,
        "world_size": distributed.world_size(),
        "train_samples": len(train_set),
        "val_samples": len(val_set),
        "samples_per_second": float(np.median([h.samples_per_second for h in result.history])),
        "tuned": tuned,
        "tuning": tuning,
        "model": task.cfg.model.model_dump(mode="json"),
        "initial_weights": loaded,
        "steps": plan.as_dict(),
        "warnings": plan.warnings,
    }
    save_model(paths.model, task, result.best_state_dict, {**summary, "primary_metric": task.goal.metric})
    write_json(report_dir / "summary.json", summary)
    return summary


def train_distributed(task: Task, paths: TaskPaths) -> dict[str, Any]:
    """This stage in `nproc_per_node` processes on this machine (`nnodes` machines each running it) under
    torchrun; the summary when process 0 ran here, else only the world size."""
    cfg = task.cfg.train.distributed
    started = time.time()
    with tempfile.TemporaryDirectory(prefix=f"lifecycle-train-{task.name}-") as tmp:
        config = Path(tmp) / "task.json"
        config.write_text(json.dumps(task.cfg.model_dump(mode="json", by_alias=True)), encoding="utf-8")
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        args = ["--task", task.name, "--config", str(config), "--root", str(paths.root), "--log-level", level]
        # every machine derives the same rendezvous id from the same config and data
        distributed.launch(cfg, run_fingerprint(task, paths)[:16], __name__, args)
    summary = paths.reports("train") / "summary.json"
    if summary.exists() and summary.stat().st_mtime >= started:
        return cast(dict[str, Any], json.loads(summary.read_text(encoding="utf-8")))
    log.info("%s: process 0 ran on another machine; it wrote the model and summary", task.name)
    return {"world_size": cfg.world_size}


def worker_main(argv: list[str] | None = None) -> int:
    """One torchrun process: join the process group and train (see `train_distributed`)."""
    parser = argparse.ArgumentParser(prog="lifecycle.stages.train")
    parser.add_argument("--task", required=True)
    parser.add_argument("--config", type=Path, required=True, help="the task's config as JSON")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    task = build_task(args.task, json.loads(args.config.read_text(encoding="utf-8")))
    with distributed.process_group(task.cfg.train):
        train(task, TaskPaths(args.root, args.task))
    return 0


if __name__ == "__main__":
    from torch.distributed.elastic.multiprocessing.errors import record

    sys.exit(record(worker_main)())
