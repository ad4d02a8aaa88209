"""Production inputs the service keeps for labeling (`monitoring.capture_inputs`), bounded in size: a busy service
cannot fill the disk. When the folder grows past `monitoring.capture_max_mb`, the oldest captures are dropped first
(down to 90 % of the bound, so the folder is scanned once per tenth of the bound captured, not on every request) and
counted; `lifecycle label` and the monitor report read the count.

Several service workers write one folder: the size bookkeeping and the pruning happen under an exclusive lock
(`fcntl.flock` on a file in the folder), so no capture is counted twice and none is lost to a race."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lifecycle.atomic import write_bytes, write_json

LOCK = ".lock"
STATE = ".state.json"  # {"bytes": what the folder holds (an upper bound between scans), "dropped": captures dropped}
LOW_WATER = 0.9
SIGNATURES = (  # what a file's first bytes say it is; an upload's name may say nothing ("blob") or lie
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"GIF8", ".gif"),
    (b"BM", ".bmp"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
    (b"fLaC", ".flac"),
    (b"OggS", ".ogg"),
)


def capture_input(directory: Path, request_id: str, filename: str, data: bytes, max_mb: float) -> Path:
    """Keep one input as `<request id><suffix>`, then hold the folder to `max_mb`. The suffix is the content's
    type where its first bytes tell, else the uploaded file name's: labeling tools show a file by its type."""
    target = directory / f"{request_id}{content_suffix(data) or name_suffix(filename)}"
    write_bytes(target, data)
    with _locked(directory):
        state = _state(directory)
        state["bytes"] += len(data)
        if state["bytes"] > max_mb * 2**20:
            state["bytes"], dropped = _drop_oldest(directory, int(LOW_WATER * max_mb * 2**20))
            state["dropped"] += dropped
        write_json(directory / STATE, state)
    return target


def content_suffix(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] in (b"WAVE", b"WEBP"):
        return ".wav" if data[8:12] == b"WAVE" else ".webp"
    return next((suffix for signature, suffix in SIGNATURES if data.startswith(signature)), None)


def name_suffix(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    return suffix if suffix[1:].isalnum() else ""


def capture_stats(directory: Path) -> dict[str, Any]:
    """What the capture folder holds now (files, MB) and how many captures the bound has dropped so far."""
    files = list(_captures(directory)) if directory.is_dir() else []
    return {
        "files": len(files),
        "mb": round(sum(size for _, _, size in files) / 2**20, 3),
        "dropped": _state(directory)["dropped"],
    }


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / LOCK).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _state(directory: Path) -> dict[str, int]:
    try:
        state = json.loads((directory / STATE).read_text(encoding="utf-8"))
        return {"bytes": int(state["bytes"]), "dropped": int(state["dropped"])}
    except (OSError, ValueError, KeyError, TypeError):
        return {"bytes": 0, "dropped": 0}


def _captures(directory: Path) -> Iterator[tuple[int, str, int]]:
    """(modification time in ns, name, size) of every capture; hidden files (the lock, the state, files being
    written) are not captures."""
    for entry in os.scandir(directory):
        if entry.is_file() and not entry.name.startswith("."):
            try:
                stat = entry.stat()
            except FileNotFoundError:  # imported by `lifecycle label` meanwhile
                continue
            yield stat.st_mtime_ns, entry.name, stat.st_size


def _drop_oldest(directory: Path, keep_bytes: int) -> tuple[int, int]:
    """Delete the oldest captures until the folder holds at most `keep_bytes`; return (bytes left, files dropped)."""
    files = sorted(_captures(directory))
    total = sum(size for _, _, size in files)
    dropped = 0
    for _, name, size in files:
        if total <= keep_bytes:
            break
        try:
            (directory / name).unlink()
            dropped += 1
        except FileNotFoundError:
            pass
        total -= size
    return total, dropped
