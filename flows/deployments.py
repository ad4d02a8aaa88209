"""Scheduled deployments for every task in params.yaml: retrain-<task> (the lifecycle flow, recording what it
produced) and monitor-<task> (drift), on the crons in params.yaml's monitoring section.

    make schedule                                  # python -m flows.deployments: serves them from this process
    python -m flows.deployments --work-pool local  # registers them with a Prefect server's work pool instead

Registered with a work pool, each deployment carries what a worker needs to run it anywhere on this machine: the
project as the working directory (a process worker otherwise runs each flow run in a new temporary directory) and
the project's environment (telemetry off, the libraries' state inside the project).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flows.monitoring import monitor, retrain_deployment
from flows.training import lifecycle
from lifecycle.params import load_params


def worker_job_variables(root: Path) -> dict[str, Any]:
    """The process work pool's job variables for the project at `root`."""
    from lifecycle.runtime import worker_environment

    return {"working_dir": str(root), "env": worker_environment(root)}


def deployments(root: Path, work_pool: str | None = None) -> list[Any]:
    """The RunnerDeployments of every task: served by `prefect.serve` here (no work pool), or registered with
    `work_pool` on a server."""
    params = load_params(root / "params.yaml", only=[])
    cron = params.monitoring
    pool: dict[str, Any] = (
        {"work_pool_name": work_pool, "job_variables": worker_job_variables(root)} if work_pool else {}
    )
    found = []
    for name in params.tasks:
        found.append(
            lifecycle.to_deployment(
                name=retrain_deployment(name),
                cron=cron.retrain_cron,
                tags=["lifecycle", name],
                parameters={"task": name, "root": str(root), "reason": "scheduled retraining", "record_versions": True},
                description=f"{name}: the whole lifecycle; records data and model versions (dvc push, git commit)",
                **pool,
            )
        )
        found.append(
            monitor.to_deployment(
                name=f"monitor-{name}",
                cron=cron.monitor_cron,
                tags=["lifecycle", name],
                parameters={"task": name, "root": str(root)},
                description=f"{name}: drift report of the served model; drift starts {retrain_deployment(name)}",
                **pool,
            )
        )
    return found


def main() -> None:
    import argparse

    from prefect import serve

    from lifecycle.runtime import configure_environment

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--work-pool",
        help="register the deployments with this work pool of the Prefect server at "
        "PREFECT_API_URL instead of serving them from this process",
    )
    args = parser.parse_args()
    configure_environment()
    found = deployments(Path.cwd().resolve(), args.work_pool)
    if args.work_pool:
        for deployment in found:
            print(f"{deployment.name}: {deployment.apply()}")
    else:
        serve(*found)


if __name__ == "__main__":
    main()
