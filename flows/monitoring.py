"""The monitor flow: a drift report of the production model's recent requests against its reference, published as
a Prefect artifact; on drift it starts the retrain-<task> deployment with the reason (run_deployment, so the
decision and the run it caused are linked in one place: this flow's log and the retraining run's parameters), waits
for it up to `monitoring.await_retrain_minutes` and fails if it did not complete, so that a crashed retraining is
reported by the monitor run and its schedule, where the user looks."""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from lifecycle.monitoring import markdown, monitor_task
from lifecycle.params import load_params
from lifecycle.paths import TaskPaths
from lifecycle.runtime import configure_environment
from lifecycle.site import rebuild as rebuild_site

RETRAIN_FLOW = "lifecycle"


def retrain_deployment(task_name: str) -> str:
    return f"retrain-{task_name}"


@task(task_run_name="drift@{task_name}")
def check_drift(task_name: str, root: str) -> dict:
    return monitor_task(task_name, Path(root) / "params.yaml", Path(root))


@flow(name="monitor", log_prints=True)
def monitor(task: str = "classify", root: str = ".") -> dict:
    """Drift or not for one task; drift starts the retraining deployment when monitoring.retrain_on_drift is on."""
    root = str(Path(root).resolve())
    configure_environment(Path(root))  # on a worker the process inherits the worker's environment, not the project's
    decision = check_drift(task, root)
    site = rebuild_site(Path(root))
    report = TaskPaths(Path(root), task).drift_reports / (decision["report_html"] or "")
    pages = f"\nReport site: `{site}`" + (f"\n\nEvidently report: `{report}`" if decision["report_html"] else "")
    create_markdown_artifact(
        key=f"{task}-drift", markdown=markdown(decision) + pages, description=f"{task}: drift decision"
    )
    print(f"{task}: {decision['status']}: {decision['reason']}")
    cfg = load_params(Path(root) / "params.yaml", only=[]).monitoring
    if decision["drift"] and cfg.retrain_on_drift:
        reason = f"drift detected by monitor: {decision['reason']}"
        try:
            run = run_deployment(
                f"{RETRAIN_FLOW}/{retrain_deployment(task)}",
                timeout=cfg.await_retrain_minutes * 60,
                parameters={"task": task, "root": root, "reason": reason, "record_versions": True},
            )
        except ObjectNotFound:
            get_run_logger().error(
                "drift, but no deployment %s/%s to start: run `make schedule` (or register the "
                "deployments with `python -m flows.deployments --work-pool ...`)",
                RETRAIN_FLOW,
                retrain_deployment(task),
            )
            raise
        get_run_logger().info("started %s (flow run %s): %s", retrain_deployment(task), run.name, reason)
        decision["retrain_flow_run"] = str(run.id)
        if cfg.await_retrain_minutes > 0:
            raise_unless_completed(run, retrain_deployment(task), cfg.await_retrain_minutes)
    return decision


def raise_unless_completed(run: FlowRun, deployment: str, waited_minutes: float) -> None:
    """A retraining that crashed, failed or never finished fails the monitor run that started it: that run (and its
    deployment's schedule) is where a user looks, not the worker's log."""
    state = run.state
    if state is not None and state.is_completed():
        return
    name, message = (state.name, state.message or "") if state is not None else ("unknown", "")
    still = "" if state is not None and state.is_final() else f" (still {name} after {waited_minutes:g} min)"
    raise RuntimeError(f"{deployment} flow run {run.name} ({run.id}), started on drift, ended {name}{still}: {message}")


def main() -> None:
    parser = argparse.ArgumentParser(description=monitor.__doc__)
    parser.add_argument("--task", default="classify")
    args = parser.parse_args()
    configure_environment()
    monitor(task=args.task)


if __name__ == "__main__":
    main()
