"""The sections of the running system, beside the task sections of lifecycle.config: how each task is served,
the HTTP service and batch inference (`serving`), drift monitoring and what a drift-triggered run records
(`monitoring`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field

from lifecycle.config import Strict, device_field


class ServeConfig(Strict):
    """How the service answers this task: adaptive batching of concurrent requests, and the embedding it logs."""

    max_batch_size: int = Field(32, ge=1, description="most requests merged into one model call (1: no batching)")
    max_latency_ms: int = Field(
        1000, ge=1, description="a request that would queue longer than this behind waiting batches is refused (503)"
    )
    device: str = device_field()
    embedding_dims: int = Field(
        8,
        ge=1,
        description="size of the input embedding logged for drift monitoring; "
        "fixed when the model is trained (its drift reference uses it)",
    )


class ServingConfig(Strict):
    """The HTTP service and batch inference, for every task."""

    max_upload_mb: float = Field(10, gt=0, description="largest accepted request file")
    log_dir: Path = Field(Path("logs/requests"), description="answered requests, JSON lines per task")
    log_max_mb: float = Field(16, gt=0, description="a request log file rotates at this size")
    log_backups: int = Field(10, ge=1, description="rotated files kept per log file")
    batch_size: int = Field(64, ge=1, description="inputs per model call in batch inference (lifecycle predict)")
    reload_seconds: float = Field(
        10, ge=0, description="the service looks for a new production model this often and swaps it in (0: never)"
    )
    access_log: bool = Field(
        False, description="BentoML's access log line per request (the request log has every answered one)"
    )
    workers: int = Field(
        1, ge=1, description="service processes, each with every task's model and batcher (one per core at most)"
    )
    trace_requests: bool = Field(
        False,
        description="BentoML's OpenTelemetry spans for the task routes; they are exported only where BentoML's "
        "configuration sets a tracing exporter and sample rate, and cost about a third of a small model's "
        "per-request CPU even when not sampled",
    )
    shutdown_grace_seconds: float = Field(
        30, ge=0, description="on SIGTERM the service answers the requests it accepted for at most this long"
    )


class DriftThresholds(Strict):
    """Share of drifted columns in a group at which the group counts as drifted (drift is declared when any does)."""

    descriptors: float = Field(0.3, gt=0, le=1)
    prediction: float = Field(0.5, gt=0, le=1)
    embedding: float = Field(0.3, gt=0, le=1)


GIT_IDENTITY = r"^\s*(?P<name>[^<>]*[^<>\s])\s*<(?P<email>[^<>\s]+@[^<>\s]+)>\s*$"


def parse_git_identity(value: str) -> tuple[str, str]:
    """`Name <email@host>` -> (name, email); ValueError saying the expected form otherwise."""
    import re

    match = re.match(GIT_IDENTITY, value)
    if not match:
        raise ValueError(f"{value!r} is not a git identity of the form 'Name <email@host>'")
    return match["name"], match["email"]


def _git_identity(value: str | None) -> str | None:
    if value is not None:
        parse_git_identity(value)
    return value


class MonitoringConfig(Strict):
    """Drift monitoring over the request log, the schedules, and what a drift-triggered retraining records."""

    min_rows: int = Field(200, ge=1, description="fewer logged requests: 'not enough data', never drift")
    last_n: int | None = Field(
        None, ge=1, description="compare the last N requests instead of those since the last report"
    )
    max_rows: int = Field(20_000, ge=100, description="larger windows (and references) are sampled to this many rows")
    num_method: str | None = Field(
        None,
        description="Evidently stat test for numeric columns (null: Evidently picks "
        "by size: K-S up to 1,000 reference rows, else Wasserstein)",
    )
    num_threshold: float | None = Field(None, gt=0, description="null: the chosen test's default")
    cat_method: str | None = Field(
        None, description="Evidently stat test for categorical columns (null: Evidently picks)"
    )
    cat_threshold: float | None = Field(None, gt=0)
    drift_share: DriftThresholds = Field(default_factory=DriftThresholds)
    retrain_on_drift: bool = Field(True, description="drift starts the retrain-<task> deployment")
    await_retrain_minutes: float = Field(
        180, ge=0, description="the monitor run waits this long for the retraining it started, and fails if that does"
    )
    monitor_cron: str = Field("0 2 * * *", description="monitor-<task>: daily at 02:00 UTC")
    retrain_cron: str = Field("0 3 * * 1", description="retrain-<task>: weekly, Monday 03:00 UTC")
    commit_lock: bool = Field(True, description="a scheduled run commits dvc.lock naming the run and its reason")
    push: bool = Field(True, description="a scheduled run pushes data and models to the DVC remote")
    git_author: Annotated[str | None, AfterValidator(_git_identity)] = Field(
        None,
        description="'Name <email>' committing a recorded run where git has no identity (no user.email) on the "
        "machine running it, e.g. a worker; null: git's own",
    )
    capture_inputs: bool = Field(False, description="the service keeps a sample of raw inputs for labeling")
    capture_rate: float = Field(0.1, gt=0, le=1, description="share of answered requests whose input is kept")
    capture_dir: Path = Field(Path("data/captured"), description="captured inputs, <capture_dir>/<task>/")
    capture_max_mb: float = Field(
        500, gt=0, description="each task's captured inputs are held to this size: the oldest are dropped first"
    )
    label_below: float = Field(0.9, gt=0, le=1, description="captured inputs below this confidence go to review")
