"""The one generic training loop. The task fills the hooks (model, loss, metrics); this module owns the
device, mixed precision, the optimiser step, early stopping and resumable checkpoints. Started by torchrun, it
trains data-parallel (lifecycle.distributed): each process its shard, gradients all-reduced, validation reduced
across processes, and only process 0 writes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lifecycle import distributed
from lifecycle.atomic import atomic_path
from lifecycle.config import TrainConfig
from lifecycle.devices import autocast, resolve_precision, to_device
from lifecycle.stepplan import patience_epochs, warmup_share
from lifecycle.tasks.parts import Goal, Network, Outputs

log = logging.getLogger(__name__)


class AmpStep:
    """Autocast for the forward pass, and the optimiser step: scale -> backward -> unscale -> clip -> step ->
    update. The gradient scaler is only active for fp16; its state travels in the checkpoint."""

    def __init__(self, device: torch.device, precision: str, grad_clip: float | None = None) -> None:
        self.device, self.precision = device, precision
        self.grad_clip = grad_clip
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def autocast(self) -> torch.autocast:
        return autocast(self.device, self.precision)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter]) -> None:
        self.scaler.scale(loss).backward()
        if self.grad_clip is not None:
            self.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(params, self.grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()
        optimizer.zero_grad(set_to_none=True)


class ForwardStep(nn.Module):
    """The task's training forward pass as one module call: DDP synchronises gradients of what runs inside its
    own call, whichever methods of the model the task's forward uses."""

    def __init__(self, network: Network, model: nn.Module) -> None:
        super().__init__()
        self.network, self.model = network, model

    def forward(self, inputs: Any) -> Any:
        return self.network.forward(self.model, inputs).outputs


def build_optimizer(model: nn.Module, cfg: TrainConfig, head: str | None = None) -> torch.optim.Optimizer:
    """Decayed and undecayed parameters (biases and norm weights are not decayed); with a `head` prefix, the
    backbone's (the rest) learn at `lr x backbone_lr_mult`."""
    groups = []
    for in_head in (True, False) if head is not None else (True,):
        params = [(n, p) for n, p in model.named_parameters() if head is None or n.startswith(head) == in_head]
        lr = cfg.lr if in_head else cfg.lr * cfg.backbone_lr_mult
        decay = [p for _, p in params if p.ndim > 1]
        no_decay = [p for _, p in params if p.ndim <= 1]
        groups += [
            {"params": decay, "weight_decay": cfg.weight_decay, "lr": lr},
            {"params": no_decay, "weight_decay": 0.0, "lr": lr},
        ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> Any:
    total = cfg.epochs * steps_per_epoch
    if cfg.scheduler == "onecycle":
        max_lr = [group["lr"] for group in optimizer.param_groups]  # the backbone's may be lower
        warmup = warmup_share(cfg.warmup, total)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total, pct_start=warmup)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def freeze_backbone(model: nn.Module, head: str, frozen: bool) -> None:
    """Stop (or restart) gradients of every parameter outside the head."""
    for name, param in model.named_parameters():
        if not name.startswith(head):
            param.requires_grad_(not frozen)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically: a crash mid-write leaves the previous checkpoint intact."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    val_loss: float
    val_metrics: dict[str, float]
    samples_per_second: float
    lr: float


@dataclass
class FitResult:
    best_metric: float
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    resumed_from_epoch: int
    device: str
    precision: str
    history: list[EpochLog] = field(default_factory=list)
    best_state_dict: dict[str, torch.Tensor] = field(default_factory=dict)


def scalar_metrics(values: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """The scalar entries of a computed MetricCollection (per-class vectors are left out)."""
    return {k: float(v) for k, v in values.items() if v.numel() == 1}


@torch.no_grad()
def run_eval(
    network: Network,
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    amp: AmpStep,
    predict: Outputs | None = None,
) -> tuple[float, dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Mean loss and computed metrics over a loader, and with `predict` the post-processed predictions (made batch
    by batch: raw outputs, a detector's class maps say, are never all held at once)."""
    model.eval()
    metrics = network.metrics().to(device)
    total_loss, count, predictions = 0.0, 0, []
    for inputs, targets in loader:
        inputs, targets = to_device(inputs, device), to_device(targets, device)
        with amp.autocast():
            outputs = network.forward(model, inputs).outputs
        total_loss += float(network.loss(outputs, targets)) * len(targets)
        count += len(targets)
        metrics.update(outputs.float() if isinstance(outputs, torch.Tensor) else outputs, targets)
        if predict is not None:
            predictions += predict.predict(to_device(outputs, torch.device("cpu")))
    loss_sum, samples = distributed.sum_across(total_loss, count)  # torchmetrics reduces its own states
    return loss_sum / max(samples, 1), metrics.compute(), predictions


def train_one_epoch(
    network: Network,
    step_model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    amp: AmpStep,
    device: torch.device,
    progress: tqdm | None = None,
) -> tuple[float, int]:
    """One pass over the training data (a ForwardStep, data-parallel or not); returns (mean loss, samples seen),
    over all processes."""
    step_model.train()
    params = [p for p in step_model.parameters() if p.requires_grad]
    loss_sum = torch.zeros((), device=device)
    seen = 0
    for step, (inputs, targets) in enumerate(loader):
        inputs, targets = to_device(inputs, device), to_device(targets, device)
        with amp.autocast():
            outputs = step_model(inputs)
            loss = network.loss(outputs, targets)
        amp.step(loss, optimizer, params)
        scheduler.step()
        n = len(targets)
        loss_sum += loss.detach() * n
        seen += n
        if progress is not None:
            progress.update(1)
            if step % 20 == 0:
                progress.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    total, count = distributed.sum_across(loss_sum, seen)
    return total / max(count, 1), int(count)


@dataclass
class RunState:
    """What a checkpoint must capture to continue a run exactly: weights, optimiser, schedule, loss scaler and
    every random stream (augmentations and dropout draw from torch's, one per process; shuffling from the
    loader's generator, the same in every process). `snapshot` gathers from every process: all must call it."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    amp: AmpStep
    generator: torch.Generator | None
    device: torch.device

    def snapshot(self) -> dict[str, Any]:
        process_rng = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.amp.scaler.state_dict(),
            "rng": {
                "loader": self.generator.get_state() if self.generator is not None else None,
                "processes": distributed.gathered(process_rng),
            },
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.amp.scaler.load_state_dict(state["scaler"])
        if self.generator is not None and state["rng"]["loader"] is not None:
            self.generator.set_state(state["rng"]["loader"])
        own = state["rng"]["processes"][distributed.rank()]  # the run's fingerprint holds its world size
        torch.set_rng_state(own["torch"])
        if self.device.type == "cuda" and own["cuda"] is not None:
            torch.cuda.set_rng_state(own["cuda"], self.device)


class Trainer:
    """Fits a task's model with early stopping on the task's validation metric (its `goal`), saving a resumable
    checkpoint after every epoch. `fingerprint` identifies the run (config + data): a checkpoint from a
    different run, or from a finished one, is never resumed. `name` labels the log lines. In a torchrun process
    the model trains data-parallel; `on_epoch` and the checkpoint are process 0's only."""

    def __init__(
        self,
        network: Network,
        goal: Goal,
        cfg: TrainConfig,
        checkpoint_path: Path,
        fingerprint: str,
        name: str = "model",
    ) -> None:
        self.network, self.goal, self.name = network, goal, name
        self.cfg = cfg
        self.checkpoint_path = checkpoint_path
        self.fingerprint = fingerprint
        self.device = distributed.process_device(cfg)
        self.precision = resolve_precision(cfg.precision, self.device)

    def fit(
        self,
        model: nn.Module,
        train_loader: DataLoader,
        val_loader: DataLoader,
        on_epoch: Callable[[EpochLog], None] | None = None,
    ) -> FitResult:
        cfg, device = self.cfg, self.device
        model.to(device)
        step_model = distributed.data_parallel(ForwardStep(self.network, model), device, cfg.sync_batchnorm)
        head = self.network.head_prefix(model)
        optimizer = build_optimizer(model, cfg, head)
        run = RunState(
            model,
            optimizer,
            build_scheduler(optimizer, cfg, len(train_loader)),
            AmpStep(device, self.precision, cfg.grad_clip),
            train_loader.generator,
            device,
        )
        sign = 1.0 if self.goal.higher_is_better else -1.0
        result = FitResult(-sign * float("inf"), -1, 0, False, 0, str(device), self.precision)
        bad_epochs = 0
        patience = patience_epochs(cfg.patience, len(train_loader), cfg.epochs)

        main = distributed.is_main()
        report = on_epoch if main else None
        state = distributed.from_main(self.resumable_state() if main else None)
        if state is None:
            distributed.seed_process(cfg.seed)
        else:
            run.restore(state)
            result.best_metric, result.best_epoch = state["best_metric"], state["best_epoch"]
            result.best_state_dict = state["best_model"]
            result.history = [EpochLog(**h) for h in state["history"]]
            result.epochs_run = result.resumed_from_epoch = state["epoch"]
            bad_epochs = state["bad_epochs"]
            log.info("resuming %s training from epoch %d (%s)", self.name, state["epoch"], self.checkpoint_path)
            for entry in result.history if report is not None else []:
                # the callback sees the whole run, restored epochs included
                cast(Callable[[EpochLog], None], report)(entry)

        for epoch in range(result.epochs_run, cfg.epochs):
            if head is not None and cfg.freeze_backbone_epochs:
                freeze_backbone(model, head, frozen=epoch < cfg.freeze_backbone_epochs)
            entry = self._epoch(run, step_model, epoch, train_loader, val_loader)
            metric = entry.val_metrics[self.goal.metric]
            result.history.append(entry)
            result.epochs_run = epoch + 1
            if sign * metric > sign * result.best_metric:
                result.best_metric, result.best_epoch, bad_epochs = metric, epoch + 1, 0
                result.best_state_dict = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            else:
                bad_epochs += 1
            result.stopped_early = bad_epochs >= patience and epoch + 1 < cfg.epochs
            if report is not None:
                report(entry)
            self._save_checkpoint(
                {
                    **run.snapshot(),
                    "fingerprint": self.fingerprint,
                    "epoch": epoch + 1,
                    "finished": result.stopped_early or epoch + 1 == cfg.epochs,
                    "best_metric": result.best_metric,
                    "best_epoch": result.best_epoch,
                    "best_model": result.best_state_dict,
                    "bad_epochs": bad_epochs,
                    "history": [asdict(h) for h in result.history],
                },
            )
            if result.stopped_early:
                break
        return result

    def _save_checkpoint(self, state: dict[str, Any]) -> None:
        if distributed.is_main():
            save_checkpoint(self.checkpoint_path, state)
            log.info("%s checkpoint of epoch %d written to %s", self.name, state["epoch"], self.checkpoint_path)

    def _epoch(
        self, run: RunState, step_model: nn.Module, epoch: int, train_loader: DataLoader, val_loader: DataLoader
    ) -> EpochLog:
        """Train one epoch, then measure on the validation split (every process measures process 0's model)."""
        cfg, metric = self.cfg, self.goal.metric
        with tqdm(
            total=len(train_loader),
            desc=f"{self.name} epoch {epoch + 1}/{cfg.epochs}",
            leave=False,
            disable=None if cfg.progress and distributed.is_main() else True,
        ) as bar:
            start = time.perf_counter()
            train_loss, seen = train_one_epoch(
                self.network, step_model, train_loader, run.optimizer, run.scheduler, run.amp, run.device, bar
            )
            seconds = time.perf_counter() - start
        distributed.broadcast_buffers(run.model)
        val_loss, val_values, _ = run_eval(self.network, run.model, val_loader, run.device, run.amp)
        val_metrics = scalar_metrics(val_values)
        entry = EpochLog(epoch + 1, train_loss, val_loss, val_metrics, seen / seconds, run.scheduler.get_last_lr()[0])
        log.info(
            "%s epoch %d: train loss %.4f, val loss %.4f, val %s %.4f, %.0f samples/s",
            self.name,
            epoch + 1,
            train_loss,
            val_loss,
            metric,
            val_metrics[metric],
            entry.samples_per_second,
        )
        return entry

    def resumable_state(self) -> dict[str, Any] | None:
        """The checkpoint of this same run, if it was interrupted; None when training must start afresh."""
        if not self.checkpoint_path.exists():
            return None
        try:
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except Exception as e:  # an unreadable checkpoint only costs a restart, never the run
            log.warning("ignoring unreadable checkpoint %s: %s", self.checkpoint_path, e)
            return None
        if state.get("fingerprint") != self.fingerprint or state.get("finished"):
            return None
        return state
