"""Data-parallel training through torchrun (2 processes, gloo, CPU): the processes train the model one process
trains on the same global batches, process 0 alone writes, a killed rank fails the stage naming it, and the
next run resumes to the same model.

The reference is one process stepping on each global batch with the loss averaged over its two halves, each
forwarded on its own: on CPU each process normalises its own half (torch's SyncBatchNorm runs on GPUs only), so
a plain one-process run differs by its batch norm statistics over the whole batch, not by what data-parallel
training does. Against that reference the tolerance is zero: the weights must be bitwise equal, the reference
running with the processes' thread count (another count sums in another order inside the CPU kernels, which
batch norm over a few samples amplifies to ~1e-3 in 20 steps). Augmentation and dropout are off: they draw from
each process's own random stream."""

from __future__ import annotations

import copy
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY_CLASSIFY, TINY_OCR, make_task
from lifecycle.data import ManifestDataset, make_loader, rows_of_split
from lifecycle.distributed import DistributedTrainingError, threads_per_process
from lifecycle.paths import TaskPaths
from lifecycle.stages.collect import run as collect
from lifecycle.stages.split import run as split
from lifecycle.stages.train import build_loaders, seed_everything, train
from lifecycle.trainer import build_optimizer, build_scheduler

pytestmark = pytest.mark.slow
DDP = {"nproc_per_node": 2, "backend": "gloo"}


def deterministic(section: dict, **train) -> dict:
    """A tiny task section without augmentation or dropout (they draw from each process's random stream)."""
    section = copy.deepcopy(section)
    section["model"]["dropout"] = 0.0
    section["train"].update(augment=[], precision="fp32", **train)
    return section


def prepared_paths(root: Path, params: dict, name: str) -> TaskPaths:
    paths = TaskPaths(root, name)
    collect(make_task(params, name), paths)
    split(make_task(params, name), paths)
    return paths


def learned(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The trained parameters (batch norm's running statistics left out)."""
    return {k: v.float() for k, v in state.items() if v.is_floating_point() and "running" not in k}


def one_process_reference(task, paths: TaskPaths, world: int = 2) -> dict[str, torch.Tensor]:
    """The final weights of one process stepping on each global batch, the loss averaged over its `world`
    shards (the same loaders the processes use), with the trainer's optimiser and schedule."""
    cfg = task.cfg.train
    threads = torch.get_num_threads()
    torch.set_num_threads(threads_per_process(cfg.distributed))  # as in the processes (see the module's note)
    try:
        task, _, _ = build_loaders(task, paths)  # the codec fitted to the training split, as the stage does
        seed_everything(cfg.seed)
        model = task.network.build()
        data = ManifestDataset(task.codec, rows_of_split(paths.split_manifest, "train"), paths.raw, train=True)
        shards = [
            make_loader(task.codec, data, cfg.batch_size, shuffle=True, seed=cfg.seed, rank=r, world=world)
            for r in range(world)
        ]
        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(optimizer, cfg, len(shards[0]))
        model.train()
        for _ in range(cfg.epochs):
            for batches in zip(*shards, strict=True):
                losses = [task.network.loss(task.network.forward(model, x).outputs, y) for x, y in batches]
                (sum(losses) / world).backward()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    return learned(model.state_dict())


def final_weights(paths: TaskPaths) -> dict[str, torch.Tensor]:
    """The last epoch's weights, from the finished run's checkpoint (model.pt holds the best epoch's)."""
    state = torch.load(paths.checkpoint, weights_only=True)
    assert state["finished"]
    return learned(state["model"])


def assert_same_weights(ddp: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    assert ddp.keys() == reference.keys()
    differ = {k: float((ddp[k] - reference[k]).abs().max()) for k in ddp if not torch.equal(ddp[k], reference[k])}
    assert not differ, f"weights differing from the one-process reference (largest difference): {differ}"


def worker_pid(rank: int) -> int | None:
    """The torchrun worker of `rank` among this process's children (torchrun's agent runs in this process)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if ppid == os.getpid() and f"RANK={rank}".encode() in env:
            return int(entry.name)
    return None


def kill_rank_after_first_checkpoint(paths: TaskPaths, rank: int, epochs: int, killed: list[int]) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if paths.checkpoint.exists():
            epoch = torch.load(paths.checkpoint, weights_only=True)["epoch"]
            pid = worker_pid(rank)
            if 1 <= epoch < epochs and pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed.append(epoch)
                return
        time.sleep(0.01)


def test_classify_ddp_trains_the_one_process_model_writes_once_and_resumes_after_a_rank_is_killed(
    tmp_path, capfd, caplog
):
    caplog.set_level(logging.INFO)  # the processes log at this level: each checkpoint written
    epochs = 3
    section = deterministic(TINY_CLASSIFY, epochs=epochs, patience=epochs, distributed=DDP)
    params = {"tasks": ["classify"], "classify": section}
    paths = prepared_paths(tmp_path, params, "classify")

    killed: list[int] = []
    killer = threading.Thread(target=kill_rank_after_first_checkpoint, args=(paths, 1, epochs, killed))
    killer.start()
    with pytest.raises(DistributedTrainingError, match=r"rank 1 \(local rank 1, pid \d+\) was killed by SIGKILL"):
        train(make_task(params), paths)
    killer.join()
    assert killed, "rank 1 was killed between two epochs"
    assert not paths.model.exists(), "a failed run leaves no model"
    capfd.readouterr()

    summary = train(make_task(params), paths)
    assert summary["resumed_from_epoch"] == killed[0] and summary["epochs_run"] == epochs
    assert summary["world_size"] == 2
    assert_same_weights(final_weights(paths), one_process_reference(make_task(params), paths))
    assert paths.model.exists()

    log = capfd.readouterr().err
    written = [f"checkpoint of epoch {e} written" for e in range(killed[0] + 1, epochs + 1)]
    assert all(log.count(line) == 1 for line in written), "only process 0 writes the checkpoint"
    curves = paths.reports("train") / "live" / "plots" / "metrics" / "val" / "accuracy.tsv"
    header, *rows = [line.split("\t") for line in curves.read_text().splitlines()]
    steps = [row[header.index("step")] for row in rows]
    assert steps == [str(s) for s in range(epochs)], "one row per epoch: only process 0 logs curves"


def test_ocr_ddp_with_similar_size_batches_trains_the_one_process_model(tmp_path):
    params = {"tasks": ["ocr"], "ocr": deterministic(TINY_OCR, distributed=DDP)}
    paths = prepared_paths(tmp_path, params, "ocr")
    summary = train(make_task(params, "ocr"), paths)
    assert summary["world_size"] == 2 and summary["epochs_run"] == 2
    assert_same_weights(final_weights(paths), one_process_reference(make_task(params, "ocr"), paths))
