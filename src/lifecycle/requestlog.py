"""The inference log: one JSON line per answered request, per task, in size-rotated files. The service writes
it; drift monitoring reads it. Each process writes its own file, so rotation never races another writer."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

logger = logging.getLogger(__name__)


class RequestLog:
    """Appends records to `<directory>/<task>/requests-<pid>.jsonl`, rotated at `max_bytes`, keeping `backups`
    rotated files (`.1` the newest). Each record is one `write` of a whole line to a file opened for appending, so
    a crash leaves at most a partial last line, which readers skip; the size is counted here, not asked of the
    file system per line (logging's RotatingFileHandler did both per line: a twentieth of the service's CPU). Lines are
    encoded by orjson: the standard library's encoder took another twentieth, mostly on the embedding's floats."""

    def __init__(self, directory: Path, task: str, max_bytes: int, backups: int) -> None:
        self.path = Path(directory) / task / f"requests-{os.getpid()}.jsonl"
        self.max_bytes, self.backups = max_bytes, backups
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open()
        except OSError:  # the service still answers; monitoring has no data until this is fixed
            logger.exception("cannot open the request log %s: requests will not be logged", self.path)

    def write(self, record: dict[str, Any]) -> bool:
        """Append one record; a failure is reported in the server log and never raised (the answer matters more)."""
        try:
            line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
            with self._lock:
                if self._fd is None:
                    return False
                if self._size and self._size + len(line) > self.max_bytes:
                    self._rotate()
                self._size += os.write(self._fd, line)
            return True
        except Exception:  # noqa: BLE001 - a broken log must not fail the request
            logger.exception("could not write the request log %s", self.path)
            return False

    def close(self) -> None:
        """Close the file (at shutdown); every written line is already in it."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._size = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        """`.jsonl` -> `.jsonl.1` -> ... -> `.jsonl.<backups>`, the oldest dropped; then a new file."""
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._open()


def log_files(directory: Path, task: str) -> list[Path]:
    """A task's request log files, oldest first."""
    return sorted((Path(directory) / task).glob("requests-*.jsonl*"), key=_age)


def read_requests(directory: Path, task: str) -> Iterator[dict[str, Any]]:
    """Every logged request of a task, oldest file first; unparseable lines (a crash mid-write) are skipped."""
    for path in log_files(directory, task):
        with path.open(encoding="utf-8") as f:
            for line in f:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue


def _age(path: Path) -> tuple[int, int]:
    """Oldest first: by modification time, and among equal times the higher rotation number (`.jsonl.3`) first."""
    rotation = path.suffix.lstrip(".")
    return path.stat().st_mtime_ns, -int(rotation) if rotation.isdigit() else 0
