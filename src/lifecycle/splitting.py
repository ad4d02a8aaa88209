"""The split rule: a sample's split comes from a hash of its split unit (its content hash, or its group), so
adding data never moves an existing sample to another split."""

from __future__ import annotations

import hashlib

from lifecycle.config import SplitConfig

SPLITS = ("train", "val", "test")


def split_of(key: str, cfg: SplitConfig) -> str:
    """A deterministic split for a key: its hash, read as a number in [0, 1), against the cumulative ratios."""
    position = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:15], 16) / 16**15
    if position < cfg.train:
        return "train"
    return "val" if position < cfg.train + cfg.val else "test"
