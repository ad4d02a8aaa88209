"""Where and in which precision a model runs: the device from a config string, and the autocast dtype the
hardware runs natively. Shared by training, evaluation and serving."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device is '{spec}' but CUDA is not available on this machine")
    return device


def cpu_has_native_bf16() -> bool:
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(spec: str, device: torch.device) -> str:
    """'auto' picks bf16 where the hardware runs it natively, fp16 on CUDA without bf16, else fp32."""
    if spec == "fp16" and device.type != "cuda":
        raise ValueError("train.precision 'fp16' needs CUDA; use 'bf16' (autocast) or 'fp32' on CPU")
    if spec != "auto":
        return spec
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """Autocast for `precision` on `device` (a no-op context for fp32)."""
    dtype = AUTOCAST_DTYPES.get(precision)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def to_device(obj: Any, device: torch.device) -> Any:
    """Tensors, and tensors inside mappings, lists and tuples, moved to `device`."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj
