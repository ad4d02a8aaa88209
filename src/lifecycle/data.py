"""Manifests and datasets: the split manifest's rows become (input, target) pairs for any task."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from lifecycle.atomic import read_jsonl
from lifecycle.tasks.base import Task

SPLITS = ("train", "val", "test")


def rows_of_split(manifest: Path, split: str) -> list[dict[str, Any]]:
    rows = [row for row in read_jsonl(manifest) if row.get("split") == split]
    if not rows:
        raise ValueError(f"{manifest}: the '{split}' split is empty; collect more data or change the split ratios")
    return rows


class ManifestDataset(Dataset):
    """Manifest rows decoded once into memory; the transform runs per item (augmentation differs each epoch)."""

    def __init__(self, task: Task, rows: Sequence[dict[str, Any]], raw_dir: Path, train: bool) -> None:
        self.rows = list(rows)
        self.inputs = [task.load_input(raw_dir / row["path"]) for row in self.rows]
        self.targets = [task.encode_target(row["label"]) for row in self.rows]
        self.transform = task.transform(train)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        return self.transform(self.inputs[index], self.targets[index])


def make_loader(
    task: Task, dataset: Dataset, batch_size: int, *, shuffle: bool, num_workers: int = 0, seed: int = 0
) -> DataLoader:
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=task.collate,
        generator=generator,
        persistent_workers=num_workers > 0,
    )
