import pickle

import pytest
import torch

from lifecycle.data import ShardedBatches, SimilarSizeBatches
from lifecycle.devices import resolve_device, resolve_precision
from lifecycle.trainer import AmpStep, save_checkpoint


def test_precision_resolution():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) in ("fp32", "bf16")
    with pytest.raises(ValueError, match="fp16' needs CUDA"):
        resolve_precision("fp16", cpu)


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")


def test_bf16_autocast_on_cpu_keeps_fp32_grads():
    model = torch.nn.Linear(4, 2)
    amp = AmpStep(torch.device("cpu"), "bf16", grad_clip=1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with amp.autocast():
        out = model(torch.randn(3, 4))
    assert out.dtype == torch.bfloat16
    loss = out.float().pow(2).mean()
    loss.backward()
    assert model.weight.grad.dtype == torch.float32
    optimizer.zero_grad()
    with amp.autocast():
        loss = model(torch.randn(3, 4)).float().pow(2).mean()
    amp.step(loss, optimizer, model.parameters())
    assert model.weight.grad is None, "the step clears gradients"
    assert not amp.scaler.is_enabled(), "no loss scaling outside fp16"


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1})
    with pytest.raises((pickle.PicklingError, AttributeError)):  # a local lambda cannot be pickled
        save_checkpoint(path, {"epoch": 2, "bad": lambda: None})  # unpicklable: the write fails
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_sharded_batches_split_each_global_batch_evenly_among_processes():
    """Each process takes an equal share of every global batch (the last one padded with its first samples);
    together the shares are the global batch one process would train on."""
    sizes = [int(s) for s in torch.randint(1, 50, (37,), generator=torch.Generator().manual_seed(1))]
    global_batches = list(SimilarSizeBatches(sizes, 8, torch.Generator().manual_seed(0)))
    shards = [
        list(ShardedBatches(SimilarSizeBatches(sizes, 8, torch.Generator().manual_seed(0)), r, 4)) for r in range(4)
    ]
    assert all(len(s) == len(global_batches) for s in shards)
    for step, batch in enumerate(global_batches):
        shares = [shard[step] for shard in shards]
        assert len({len(share) for share in shares}) == 1, "every process gets a batch of the same size"
        together = [i for share in shares for i in share]
        assert together[: len(batch)] == batch and set(together[len(batch) :]) <= set(batch)
