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


def configure_environment(root: Path | None = None) -> None:
    """Set defaults (explicit settings in the environment win) for telemetry and state directories."""
    root = (root or Path.cwd()).resolve()
    for key, value in {**TELEMETRY_OFF, **PREFECT_STARTUP}.items():
        os.environ.setdefault(key, value)
    state = {
        "PREFECT_HOME": root / ".prefect",
        "BENTOML_HOME": root / ".bentoml",
        "DVC_SITE_CACHE_DIR": root / ".dvc" / "site-cache",
        "MPLCONFIGDIR": root / ".cache" / "matplotlib",
    }
    for key, path in state.items():
        os.environ.setdefault(key, str(path))


NOISY_LOGGERS = ("great_expectations", "matplotlib", "PIL", "httpx", "httpcore")


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
