"""Demonstration traffic: real HTTP requests to the running service, from the test split, optionally shifted the
way production data drifts, so anyone can watch the loop (serve, shift, monitor, drift, retrain)."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lifecycle.data import rows_of_split
from lifecycle.paths import TaskPaths
from lifecycle.tasks import Task


def send_traffic(
    task: Task, paths: TaskPaths, url: str, shift: str, count: int | None = None, concurrency: int = 8, seed: int = 0
) -> dict[str, int]:
    """POST `count` test-split inputs (all of them by default, in a seeded order) with `shift` applied to
    `<url>/<endpoint>`; returns how many answers came back with each HTTP status."""
    import httpx

    shifts = task.monitoring.shifts
    if shift not in shifts:
        raise ValueError(f"unknown shift '{shift}' for task {task.name}; choose from {', '.join(shifts)}")
    rows = rows_of_split(paths.split_manifest, "test")
    rng = np.random.default_rng(seed)
    n = count or len(rows)
    order = [rows[i] for i in np.concatenate([rng.permutation(len(rows)) for _ in range(-(-n // len(rows)))])[:n]]
    bodies = [
        (Path(row["path"]).name, task.monitoring.shift((paths.raw / row["path"]).read_bytes(), shift, rng))
        for row in order
    ]
    endpoint, field = f"{url.rstrip('/')}/{task.spec.endpoint}", task.codec.input_field
    with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:

        def post(body: tuple[str, bytes]) -> int:
            return client.post(endpoint, files={field: body}).status_code

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            return {str(status): n for status, n in Counter(pool.map(post, bodies)).items()}
