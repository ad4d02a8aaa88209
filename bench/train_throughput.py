"""Training throughput: the project's Trainer against a bare PyTorch loop and Lightning's Trainer, on the
same model, data, batch size and precision, side by side in one process. Prints samples/s and ratios.

    make bench            # or: python bench/train_throughput.py --epochs 3 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lifecycle.data import ManifestDataset, make_loader, rows_of_split
from lifecycle.devices import resolve_device, resolve_precision
from lifecycle.params import load_params
from lifecycle.paths import TaskPaths
from lifecycle.stages.collect import collect
from lifecycle.stages.split import split
from lifecycle.tasks import build_task
from lifecycle.trainer import Trainer, build_optimizer


def bare_loop(task, model, loader, device, precision, epochs: int) -> list[float]:
    """The reference: the plainest correct loop, same optimiser, same autocast."""
    model.to(device).train()
    optimizer = build_optimizer(model, task.cfg.train)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    rates = []
    for _ in range(epochs):
        start, seen = time.perf_counter(), 0
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = task.network.loss(model(inputs), targets)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            seen += len(targets)
        rates.append(seen / (time.perf_counter() - start))
    return rates


def project_trainer(task, model, loader, val_loader, epochs: int, workdir: Path) -> list[float]:
    cfg = task.cfg.train.model_copy(update={"epochs": epochs, "patience": epochs, "progress": False})
    trainer = Trainer(task.network, task.goal, cfg, workdir / f"bench-{time.monotonic_ns()}.pt", "bench", task.name)
    result = trainer.fit(model, loader, val_loader)
    return [h.samples_per_second for h in result.history]


def lightning_trainer(task, model, loader, precision: str, epochs: int) -> list[float]:
    import lightning as L

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def training_step(self, batch, _):
            inputs, targets = batch
            return task.network.loss(self.model(inputs), targets)

        def configure_optimizers(self):
            return build_optimizer(self.model, task.cfg.train)

    class Clock(L.Callback):
        def __init__(self) -> None:
            self.rates: list[float] = []

        def on_train_epoch_start(self, *_):
            self.start = time.perf_counter()

        def on_train_epoch_end(self, *_):
            self.rates.append(len(loader.dataset) / (time.perf_counter() - self.start))

    clock = Clock()
    L.Trainer(
        max_epochs=epochs,
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[clock],
        precision={"bf16": "bf16-mixed", "fp16": "16-mixed"}.get(precision, "32-true"),
    ).fit(Module(), loader)
    return clock.rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="classify")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is warm-up")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the three contenders")
    parser.add_argument("--precision", default=None, help="override train.precision (fp32, bf16, fp16)")
    args = parser.parse_args()

    params = load_params("params.yaml").task(args.task)
    if args.precision:
        params = params.model_copy(update={"train": params.train.model_copy(update={"precision": args.precision})})
    task = build_task(args.task, params)
    device = resolve_device(params.train.device)
    precision = resolve_precision(params.train.precision, device)
    with tempfile.TemporaryDirectory() as tmp:
        paths = TaskPaths(Path(tmp), args.task)
        collect(task.source, paths)
        split(task.source, task.cfg.split, paths)
        codec = task.codec
        train_set = ManifestDataset(codec, rows_of_split(paths.split_manifest, "train"), paths.raw, train=True)
        val_set = ManifestDataset(codec, rows_of_split(paths.split_manifest, "val")[:64], paths.raw, train=False)

        def loader():
            return make_loader(codec, train_set, params.train.batch_size, shuffle=True, seed=params.train.seed)

        def fresh_model():
            torch.manual_seed(params.train.seed)
            return task.network.build()

        rates: dict[str, list[float]] = {"bare PyTorch loop": [], "lifecycle Trainer": [], "Lightning Trainer": []}
        for _ in range(args.rounds):
            rates["bare PyTorch loop"] += bare_loop(task, fresh_model(), loader(), device, precision, args.epochs)[1:]
            rates["lifecycle Trainer"] += project_trainer(
                task, fresh_model(), loader(), make_loader(codec, val_set, 64, shuffle=False), args.epochs, Path(tmp)
            )[1:]
            rates["Lightning Trainer"] += lightning_trainer(task, fresh_model(), loader(), precision, args.epochs)[1:]

    median = {name: statistics.median(r) for name, r in rates.items()}
    print(
        f"\n{args.task}: {len(train_set)} samples/epoch, batch {params.train.batch_size}, {device}, {precision}, "
        f"{torch.get_num_threads()} threads; median of {args.rounds} x {args.epochs - 1} timed epochs"
    )
    print(f"{'contender':<20} {'samples/s':>10}   runs")
    for name, value in median.items():
        print(f"{name:<20} {value:>10.0f}   {', '.join(f'{r:.0f}' for r in rates[name])}")
    ours = median["lifecycle Trainer"]
    print(f"\nlifecycle / bare loop : {ours / median['bare PyTorch loop']:.3f}  (target >= 0.95)")
    print(f"lifecycle / Lightning : {ours / median['Lightning Trainer']:.3f}  (target >= 1.00)")


if __name__ == "__main__":
    main()
