"""Process environment for entry points: telemetry off, and every library's state kept inside the project.
Called by the CLI and the flows before they import the libraries concerned, never at import time."""

from __future__ import annotations

import logging
import os
from pathlib import Path

TELEMETRY_OFF = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "BENTOML_DO_NOT_TRACK": "true",
    "DVC_NO_ANALYTICS": "1",
    "ITERATIVE_DO_NOT_TRACK": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
}
# Prefect's temporary server migrates a fresh database before it answers: ~25 s on 2 cores, over the 20 s default.
PREFECT_STARTUP = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}


def state_directories(root: Path) -> dict[str, str]:
    """Where each library keeps its state for the project at `root`: inside it."""
    return {
        "PREFECT_HOME": str(root / ".prefect"),
        "BENTOML_HOME": str(root / ".bentoml"),
        "DVC_SITE_CACHE_DIR": str(root / ".dvc" / "site-cache"),
        "MPLCONFIGDIR": str(root / ".cache" / "matplotlib"),
    }


def configure_environment(root: Path | None = None) -> None:
    """Set defaults (explicit settings in the environment win) for telemetry and state directories."""
    root = (root or Path.cwd()).resolve()
    for key, value in {**TELEMETRY_OFF, **PREFECT_STARTUP, **state_directories(root)}.items():
        os.environ.setdefault(key, value)


def worker_environment(root: Path) -> dict[str, str]:
    """What a flow run started by a worker needs of the project's environment (this process's settings win):
    telemetry off and the libraries' state inside the project. Prefect's own settings come from the worker."""
    wanted = {**TELEMETRY_OFF, **state_directories(root.resolve())}
    wanted.pop("PREFECT_HOME")
    return {key: os.environ.get(key, value) for key, value in wanted.items()}


NOISY_LOGGERS = ("great_expectations", "matplotlib", "PIL", "httpx", "httpcore")


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
