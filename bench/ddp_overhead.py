"""DDP overhead at world size 1: the trainer's optimiser step on the classify network (params.yaml's settings),
plain against wrapped in DistributedDataParallel in a one-process group (gloo on CPU, nccl on CUDA), on the
device this machine has. Alternates the two for a few rounds on the same synthetic batches and prints
samples/s for each and the ratio (DDP / plain; 1.0 means no overhead).

    python bench/ddp_overhead.py --steps 50 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist
from torch import nn

from lifecycle.devices import resolve_device, resolve_precision, to_device
from lifecycle.params import load_params
from lifecycle.tasks import build_task
from lifecycle.trainer import AmpStep, ForwardStep, build_optimizer


def samples_per_second(task, step_model: nn.Module, batches: list, device: torch.device, precision: str) -> float:
    """The trainer's step (autocast forward, loss, AmpStep) over `batches`."""
    step_model.train()
    optimizer = build_optimizer(step_model, task.cfg.train)
    amp = AmpStep(device, precision, task.cfg.train.grad_clip)
    params = [p for p in step_model.parameters() if p.requires_grad]
    start, seen = time.perf_counter(), 0
    for inputs, targets in batches:
        with amp.autocast():
            loss = task.network.loss(step_model(inputs), targets)
        amp.step(loss, optimizer, params)
        seen += len(targets)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    task = build_task("classify", load_params(only=["classify"]).task("classify"))
    device = resolve_device(task.cfg.train.device)
    precision = resolve_precision(task.cfg.train.precision, device)
    size = task.cfg.model.input_size
    generator = torch.Generator().manual_seed(0)
    batches = [
        to_device(
            (
                torch.randn(args.batch_size, 1, size, size, generator=generator),
                torch.randint(0, 10, (args.batch_size,)),
            ),
            device,
        )
        for _ in range(args.steps)
    ]
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    try:
        device_ids = [device.index or 0] if device.type == "cuda" else None
        plain_rates, ddp_rates = [], []
        samples_per_second(
            task, ForwardStep(task.network, task.network.build().to(device)), batches[:5], device, precision
        )
        for _ in range(args.rounds):
            torch.manual_seed(0)
            plain = ForwardStep(task.network, task.network.build().to(device))
            plain_rates.append(samples_per_second(task, plain, batches, device, precision))
            torch.manual_seed(0)
            wrapped = ForwardStep(task.network, task.network.build().to(device))
            ddp = nn.parallel.DistributedDataParallel(wrapped, device_ids=device_ids)
            ddp_rates.append(samples_per_second(task, ddp, batches, device, precision))
    finally:
        dist.destroy_process_group()
    plain_rate, ddp_rate = statistics.median(plain_rates), statistics.median(ddp_rates)
    print(f"device {device}, precision {precision}, batch {args.batch_size}, {args.steps} steps x {args.rounds} rounds")
    print(f"{'plain':<10} {plain_rate:10.0f} samples/s")
    print(f"{'DDP (1)':<10} {ddp_rate:10.0f} samples/s")
    print(f"DDP / plain: {ddp_rate / plain_rate:.3f}x")


if __name__ == "__main__":
    main()
