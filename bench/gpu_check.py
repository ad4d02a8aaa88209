"""Throughput and peak memory of the torchvision architectures this project trains, per precision: classify's
`resnet18` (through the task's own network and loss, at 224 px on generated RGB images) and a torchvision
detector (`fasterrcnn_mobilenet_v3_large_320_fpn`, built with `weights_backbone=None`), each trained for a few
steps in fp32 and under bf16 / fp16 autocast (fp16 with a gradient scaler). Prints samples/s, peak memory and the
ratios against fp32 side by side. Without a CUDA GPU it runs a tiny CPU mode (64 px, few steps) to check the script.

    bash bench/gpu_check.sh            # CUDA when available, else the tiny CPU mode
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

from lifecycle.devices import autocast
from lifecycle.trainer import AmpStep


def classify_step(size: int, batch: int, device: torch.device) -> tuple[torch.nn.Module, Callable[[], torch.Tensor]]:
    from lifecycle.params import parse_params
    from lifecycle.tasks import build_task

    section = {
        "collect": {"classes": [str(i) for i in range(10)]},
        "model": {"arch": "resnet18", "channels": 3, "input_size": size},
    }
    task = build_task("classify", parse_params({"tasks": ["classify"], "classify": section}).task("classify"))
    model = task.network.build().to(device).train()
    images = torch.randn(batch, 3, size, size, device=device)
    targets = torch.randint(0, 10, (batch,), device=device)
    return model, lambda: task.network.loss(task.network.forward(model, images).outputs, targets)


def detect_step(size: int, batch: int, device: torch.device) -> tuple[torch.nn.Module, Callable[[], torch.Tensor]]:
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    model = (
        fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=11).to(device).train()
    )
    images = [torch.rand(3, size, size, device=device) for _ in range(batch)]
    boxes = torch.tensor([[size * 0.2, size * 0.2, size * 0.6, size * 0.7]], device=device)
    targets = [{"boxes": boxes, "labels": torch.tensor([3], device=device)} for _ in range(batch)]
    return model, lambda: sum(model(images, targets).values())  # type: ignore[return-value]


def measure(
    build: Callable, size: int, batch: int, steps: int, precision: str, device: torch.device
) -> dict[str, float]:
    torch.manual_seed(0)
    model, loss_of = build(size, batch, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp = AmpStep(device, precision)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warmup = 1 if device.type == "cpu" else 3  # untimed steps (cuDNN autotuning, allocator growth)
    for step in range(steps + warmup):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        with autocast(device, precision):
            loss = loss_of()
        amp.step(loss, optimizer, model.parameters())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None  # CPU: not measured
    return {"samples_per_s": steps * batch / seconds, "peak_mib": peak, "final_loss": float(loss.detach())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke mode: 64 px, 1 timed step")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    tiny = device.type == "cpu"
    size, steps = (64, 1) if tiny else (224, 30)
    precisions = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    print(f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu (tiny mode)'}")
    for name, build, batch in (
        ("classify resnet18", classify_step, 4 if tiny else 128),
        ("detect fasterrcnn_mobilenet_v3_large_320_fpn", detect_step, 2 if tiny else 16),
    ):
        rows = {
            p: measure(build, size if name.startswith("classify") else (128 if tiny else 320), batch, steps, p, device)
            for p in precisions
        }
        base = float(rows["fp32"]["samples_per_s"] or 1.0)
        for p, r in rows.items():
            values = {k: None if v is None else round(v, 2) for k, v in r.items()}
            speed = round(float(r["samples_per_s"] or 0.0) / base, 2)
            print(json.dumps({"model": name, "precision": p, **values, "speed_vs_fp32": speed}))


if __name__ == "__main__":
    main()
