"""Folders of labeled files, in the `root/<label>/<file>` layout (user data sets and the landing zone)."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path

from lifecycle.tasks.base import RawSample, Rejected


def class_folders(
    root: Path, source: str, classes: Collection[str], suffixes: Collection[str]
) -> Iterator[RawSample | Rejected]:
    """Every file below `root`, labeled by its class folder; anything else is rejected with the reason."""
    if not root.is_dir():
        raise FileNotFoundError(f"{source} folder {root} does not exist or is not a directory")
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        relative = path.relative_to(root)
        origin = str(path)
        data = path.read_bytes()
        suffix = path.suffix.lower()
        if len(relative.parts) != 2:
            reason = "unlabeled: not directly inside a class folder (expected root/<class>/<file>)"
            yield Rejected(source, origin, reason, data, suffix)
        elif relative.parts[0] not in classes:
            reason = f"unknown class folder '{relative.parts[0]}' (expected one of {sorted(classes)})"
            yield Rejected(source, origin, reason, data, suffix)
        elif suffix not in suffixes:
            yield Rejected(source, origin, f"unsupported file type '{suffix}' (expected {sorted(suffixes)})", data, suffix)
        else:
            yield RawSample(data=data, suffix=suffix, label=relative.parts[0], source=source, origin=origin)
