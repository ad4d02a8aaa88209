"""Data-parallel training over several processes: the train stage's launch through torchrun, and inside each
process its rank, the process group and the few collectives the trainer needs. In a process torchrun did not
start the world is one process and every helper here is a no-op, so the trainer has one code path."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from lifecycle.config import DistributedConfig, TrainConfig
from lifecycle.devices import resolve_device

log = logging.getLogger(__name__)


class DistributedTrainingError(RuntimeError):
    """A training process failed; the message names its rank and how it ended."""


def active() -> bool:
    """Whether this process is one of several in a process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """The process that writes: checkpoints, the model, curves and summaries."""
    return rank() == 0


def started_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ


def backend_for(cfg: DistributedConfig, device: torch.device) -> str:
    """`auto`: nccl on CUDA, gloo on CPU. nccl cannot run on CPU tensors, so asking for it there is an error."""
    if cfg.backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if cfg.backend == "nccl" and device.type != "cuda":
        raise ValueError("train.distributed.backend 'nccl' needs CUDA; use 'gloo' or 'auto' on CPU")
    return cfg.backend


def process_device(cfg: TrainConfig) -> torch.device:
    """This process's device: on CUDA the GPU of its local rank, one per process."""
    device = resolve_device(cfg.device)
    if device.type == "cuda" and started_by_torchrun():
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


@contextlib.contextmanager
def process_group(cfg: TrainConfig) -> Iterator[None]:
    """Join the process group torchrun set up (its address and rank are in the environment) for the block."""
    device = process_device(cfg)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg.sync_batchnorm and device.type != "cuda":
        raise ValueError("train.sync_batchnorm needs CUDA: torch's SyncBatchNorm does not run on CPU")
    dist.init_process_group(backend_for(cfg.distributed, device))
    try:
        yield
    finally:
        dist.destroy_process_group()


def data_parallel(module: nn.Module, device: torch.device, sync_batchnorm: bool) -> nn.Module:
    """`module` wrapped to all-reduce its gradients across processes (the module itself in one process). DDP
    registers the parameters that require grad when it wraps: call this again after freezing or unfreezing."""
    if not active():
        return module
    if sync_batchnorm:
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def seed_process(seed: int) -> None:
    """Each process its own stream for augmentation and dropout; process 0 keeps `seed`'s, as one process would."""
    if rank() > 0:
        torch.manual_seed(seed + rank())


def sum_across(*values: float | torch.Tensor) -> list[float]:
    """Each value summed over the processes."""
    total = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if active():
        on = total.cuda() if dist.get_backend() == "nccl" else total
        dist.all_reduce(on)
        total = on.cpu()
    return total.tolist()


def broadcast_buffers(model: nn.Module) -> None:
    """Process 0's buffers (batch norm's running statistics) everywhere, so all measure the model it saves."""
    if active():
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)


def from_main(value: Any) -> Any:
    """Process 0's `value`, in every process (pickled; works without a shared filesystem)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gathered(value: Any) -> list[Any]:
    """`value` of every process, in rank order."""
    if not active():
        return [value]
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def torchrun_args(cfg: DistributedConfig, run_id: str, module: str, module_args: Sequence[str]) -> list[str]:
    """The torchrun command line (after `python -m torch.distributed.run`) that runs `module` in every process."""
    args = [f"--nproc_per_node={cfg.nproc_per_node}", f"--nnodes={cfg.nnodes}", "--max_restarts=0"]
    if cfg.rdzv_endpoint is None:
        args.append("--standalone")  # one machine: a local rendezvous on a free port
    else:
        args += ["--rdzv_backend=c10d", f"--rdzv_endpoint={cfg.rdzv_endpoint}", f"--rdzv_id={run_id}"]
    return [*args, "--module", module, *module_args]


def threads_per_process(cfg: DistributedConfig) -> int:
    """CPU threads of each process: OMP_NUM_THREADS when set, else this machine's cores shared among them."""
    return int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // cfg.nproc_per_node))


def launch(cfg: DistributedConfig, run_id: str, module: str, module_args: Sequence[str]) -> None:
    """Run `module` in `cfg.nproc_per_node` processes on this machine under torchrun's agent, joined by those of
    the other machines at the rendezvous; returns when all have finished, raises DistributedTrainingError
    naming the failed rank(s) otherwise. `run_id` must be the same on every machine."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(torchrun_args(cfg, run_id, module, module_args))
    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads_per_process(cfg))  # torchrun's default is 1
    handlers = _signal_handlers()
    log.info("torchrun: %d x %d processes running %s", cfg.nnodes, cfg.nproc_per_node, module)
    try:
        run(args)
    except ChildFailedError as e:
        raise DistributedTrainingError(failure_message(e.failures)) from None
    finally:
        _restore(handlers)
        if threads is None:
            os.environ.pop("OMP_NUM_THREADS")


def failure_message(failures: dict[int, Any]) -> str:
    """One line per failed process (torchrun's ProcessFailure): its rank, and its signal or error."""
    lines = []
    for global_rank, failure in sorted(failures.items()):
        if failure.exitcode < 0:
            how = f"was killed by {failure.signal_name()}"
        else:
            message = failure.message
            text = message.get("message", "") if isinstance(message, dict) else str(message)
            first_line = text.strip().splitlines()[0] if text.strip() else "no error recorded"
            how = f"exited with code {failure.exitcode}: {first_line}"
        lines.append(f"rank {global_rank} (local rank {failure.local_rank}, pid {failure.pid}) {how}")
    return "distributed training failed: " + "; ".join(lines)


_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


def _signal_handlers() -> dict[int, Any]:
    """torchrun's agent installs its own handlers in the main thread; they are put back after it."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in _SIGNALS}


def _restore(handlers: dict[int, Any]) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
