"""Manifests and datasets: the split manifest's rows become (input, target) pairs for any task."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence, Sized
from pathlib import Path
from typing import Any, cast

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler

from lifecycle.atomic import read_jsonl
from lifecycle.tasks.parts import Codec


def rows_of_split(manifest: Path, split: str) -> list[dict[str, Any]]:
    rows = [row for row in read_jsonl(manifest) if row.get("split") == split]
    if not rows:
        raise ValueError(f"{manifest}: the '{split}' split is empty; collect more data or change the split ratios")
    return rows


class ManifestDataset(Dataset[tuple[Any, Any]]):
    """Manifest rows decoded once into memory; the transform runs per item (augmentation differs each epoch)."""

    def __init__(self, codec: Codec, rows: Sequence[dict[str, Any]], raw_dir: Path, train: bool) -> None:
        self.rows = list(rows)
        self.inputs = [codec.load_input(raw_dir / row["path"]) for row in self.rows]
        self.targets = [_target(codec, row) for row in self.rows]
        self.transform = codec.transform(train)

    def __len__(self) -> int:
        return len(self.rows)

    def sizes(self, codec: Codec) -> list[int] | None:
        """Each input's padded dimension (`Codec.padded_size`), or None when the task's inputs do not vary."""
        sizes = [codec.padded_size(x) for x in self.inputs]
        return [s for s in sizes if s is not None] if all(s is not None for s in sizes) else None

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        return self.transform(self.inputs[index], self.targets[index])


def _target(codec: Codec, row: dict[str, Any]) -> Any:
    try:
        return codec.encode_target(row["label"])
    except ValueError as e:
        raise ValueError(f"sample {row.get('sample_id')} ({row.get('path')}): {e}") from None


class SimilarSizeBatches(Sampler[list[int]]):
    """Shuffled batches of inputs of similar size, so that a batch pads little (text lines, audio): the samples
    are shuffled, cut into pools of `pool_batches` batches, sorted by size within each pool and batched, and
    the batches are shuffled. Every sample appears once per epoch; the order comes from `generator`."""

    def __init__(
        self, sizes: Sequence[int], batch_size: int, generator: torch.Generator, pool_batches: int = 16
    ) -> None:
        self.sizes = list(sizes)
        self.batch_size = batch_size
        self.generator = generator
        self.pool = batch_size * pool_batches

    def __len__(self) -> int:
        return -(-len(self.sizes) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(len(self.sizes), generator=self.generator).tolist()
        batches = []
        for start in range(0, len(order), self.pool):
            pool = sorted(order[start : start + self.pool], key=self.sizes.__getitem__)
            batches += [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        for i in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[i]


class ShardedBatches(Sampler[list[int]]):
    """This process's share of each global batch, for data-parallel training: every process draws the same
    global batches (the same generator state), pads each to a multiple of `world` with its first samples (so
    that every process gets a batch of the same size, and DDP's mean of their gradients is the global batch's)
    and takes slice `rank` of it. The global batches are those one process would train on."""

    def __init__(self, batches: Iterable[list[int]], rank: int, world: int) -> None:
        self.batches, self.rank, self.world = batches, rank, world

    def __len__(self) -> int:
        return len(cast(Sized, self.batches))

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            pad = -len(batch) % self.world
            padded = batch + (batch * self.world)[:pad]
            share = len(padded) // self.world
            yield padded[self.rank * share : (self.rank + 1) * share]


def make_loader(
    codec: Codec,
    dataset: ManifestDataset,
    batch_size: int,
    *,
    shuffle: bool,
    num_workers: int = 0,
    seed: int = 0,
    rank: int = 0,
    world: int = 1,
) -> DataLoader:
    """Batches of `dataset`; shuffled ones are drawn from a seeded generator (the trainer checkpoints its state)
    and, when the task's inputs vary in size, grouped by size. With `world` > 1 processes, this process's shard:
    its share of each global batch of `batch_size` when shuffled (training), every `world`-th sample otherwise
    (evaluation, whose metrics the processes then reduce; as torch's DistributedSampler pads, up to `world` - 1
    samples count twice there)."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    sizes = dataset.sizes(codec) if shuffle else None
    batching: dict[str, Any]
    if sizes is not None:
        batching = {"batch_sampler": SimilarSizeBatches(sizes, batch_size, cast(torch.Generator, generator))}
    elif shuffle and world > 1:
        order = RandomSampler(dataset, generator=generator)
        batching = {"batch_sampler": BatchSampler(order, batch_size, drop_last=False)}
    else:
        batching = {"batch_size": batch_size, "shuffle": shuffle}
    if world > 1 and shuffle:
        batching["batch_sampler"] = ShardedBatches(batching["batch_sampler"], rank, world)
    elif world > 1:  # equal shares, the last padded with the first samples: list-state metrics (mAP) need them
        batching["sampler"] = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
    return DataLoader(
        dataset,
        num_workers=num_workers,
        collate_fn=codec.collate,
        generator=generator,
        persistent_workers=num_workers > 0,
        **batching,
    )
