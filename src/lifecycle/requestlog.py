"""The inference log: one JSON line per answered request, per task, in size-rotated files. The service writes
it; drift monitoring reads it. Each process writes its own file, so rotation never races another writer."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class RequestLog:
    """Appends records to `<directory>/<task>/requests-<pid>.jsonl`, rotated at `max_bytes`."""

    def __init__(self, directory: Path, task: str, max_bytes: int, backups: int) -> None:
        self.path = Path(directory) / task / f"requests-{os.getpid()}.jsonl"
        self._logger = logging.getLogger(f"lifecycle.requests.{task}.{os.getpid()}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        if self._logger.handlers:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handler: logging.Handler = RotatingFileHandler(
                self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
            )
        except OSError:  # the service still answers; monitoring has no data until this is fixed
            logger.exception("cannot open the request log %s: requests will not be logged", self.path)
            handler = logging.NullHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger.addHandler(handler)

    def write(self, record: dict[str, Any]) -> bool:
        """Append one record; a failure is reported in the server log and never raised (the answer matters more)."""
        try:
            self._logger.info(json.dumps(record, separators=(",", ":"), allow_nan=False))
            return True
        except Exception:  # noqa: BLE001 - a broken log must not fail the request
            logger.exception("could not write the request log %s", self.path)
            return False

    def close(self) -> None:
        """Flush and close the file (at shutdown)."""
        for handler in list(self._logger.handlers):
            handler.close()
            self._logger.removeHandler(handler)


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
