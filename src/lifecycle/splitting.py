"""The split rule: a sample's split comes from a hash of its split unit (its content hash, or its group), so
adding data never moves an existing sample to another split."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lifecycle.atomic import write_text
from lifecycle.config import SplitConfig

SPLITS = ("train", "val", "test")


def split_of(key: str, cfg: SplitConfig) -> str:
    """A deterministic split for a key: its hash, read as a number in [0, 1), against the cumulative ratios."""
    position = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:15], 16) / 16**15
    if position < cfg.train:
        return "train"
    return "val" if position < cfg.train + cfg.val else "test"


# Production inputs that were reviewed and imported (`lifecycle label --import`) have no font, voice or source digit
# to keep apart: they form the group `captured`, split by their content hash like ungrouped samples and reported
# as a group of their own. The landing zone lists their content hashes in a hidden file (collectors skip it).
CAPTURED = "captured"
CAPTURED_LIST = ".captured"


def split_key(row: dict[str, Any]) -> str:
    """What a sample's split is drawn from: its group, or its content hash (ungrouped and captured samples)."""
    group = row.get("group")
    return str(group) if group and group != CAPTURED else str(row["sample_id"])


def captured_digests(incoming: Path) -> set[str]:
    """The content hashes (SHA-256) of the reviewed captures imported into the landing zone `incoming`."""
    listing = incoming / CAPTURED_LIST
    return set(listing.read_text(encoding="utf-8").split()) if listing.is_file() else set()


def add_captured(incoming: Path, digests: Iterable[str]) -> None:
    """Record more imported captures in the landing zone's list (rewritten whole, atomically)."""
    known = captured_digests(incoming)
    new = sorted(set(digests) - known)
    if new:
        write_text(incoming / CAPTURED_LIST, "".join(f"{d}\n" for d in sorted(known) + new))
