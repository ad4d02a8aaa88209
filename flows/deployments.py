"""Scheduled deployments for every task in params.yaml: retrain-<task> (the lifecycle flow, recording what it
produced) and monitor-<task> (drift), on the crons in params.yaml's monitoring section.

    make schedule      # python -m flows.deployments: serves them all from this process; Ctrl-C stops
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flows.monitoring import monitor, retrain_deployment
from flows.training import lifecycle
from lifecycle.params import load_params


def deployments(root: Path) -> list[Any]:
    """The RunnerDeployments of every task: served by `prefect.serve` here, or applied to a server."""
    params = load_params(root / "params.yaml", only=[])
    cron = params.monitoring
    found = []
    for name in params.tasks:
        found.append(
            lifecycle.to_deployment(
                name=retrain_deployment(name),
                cron=cron.retrain_cron,
                tags=["lifecycle", name],
                parameters={"task": name, "root": str(root), "reason": "scheduled retraining", "record_versions": True},
                description=f"{name}: the whole lifecycle; records data and model versions (dvc push, dvc.lock commit)",
            )
        )
        found.append(
            monitor.to_deployment(
                name=f"monitor-{name}",
                cron=cron.monitor_cron,
                tags=["lifecycle", name],
                parameters={"task": name, "root": str(root)},
                description=f"{name}: drift report of the served model; drift starts {retrain_deployment(name)}",
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
    found = deployments(Path.cwd().resolve())
    if args.work_pool:
        for deployment in found:
            print(f"{deployment.name}: {deployment.apply(work_pool_name=args.work_pool)}")
    else:
        serve(*found)


if __name__ == "__main__":
    main()
