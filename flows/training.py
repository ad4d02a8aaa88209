"""The lifecycle flow: runs the same DVC stages as `dvc repro` (so dvc.lock records the run) as Prefect
tasks, then publishes the test metrics as a markdown artifact. No ML logic lives here."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from lifecycle.paths import TaskPaths
from lifecycle.pipeline import STAGE_NAMES, dvc_stage_name
from lifecycle.reporting import run_summary, summary_markdown
from lifecycle.runtime import configure_environment
from lifecycle.site import rebuild as rebuild_site

RETRIES = {"collect": 2}  # reading user folders can fail transiently; the other stages are deterministic


@task(task_run_name="{stage}-{task_name}")
def repro_stage(stage: str, task_name: str, root: str) -> None:
    """`dvc repro --single-item STAGE-TASK`: DVC skips the stage when nothing it depends on changed."""
    logger = get_run_logger()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    name = dvc_stage_name(stage, task_name)
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", name]
    proc = subprocess.run(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout.splitlines():
        logger.info(line)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-30:])
        raise RuntimeError(f"dvc repro {name} failed (exit {proc.returncode}):\n{tail}")


@task(task_run_name="record@{task_name}")
def record(task_name: str, root: str, reason: str) -> str:
    """Push data and model versions to the DVC remote; commit dvc.lock and the git-tracked outputs it describes,
    naming this run and its reason."""
    from prefect.runtime import flow_run

    from lifecycle.params import load_params
    from lifecycle.recording import record_run

    cfg = load_params(Path(root) / "params.yaml", only=[]).monitoring
    name = flow_run.name or "local"
    recorded = record_run(Path(root), task_name, name, reason, cfg.push, cfg.commit_lock, cfg.git_author)
    return recorded.commit or "dvc.lock unchanged"


@flow(name="lifecycle", log_prints=True)
def lifecycle(
    task: str = "classify", root: str = ".", reason: str = "manual run", record_versions: bool = False
) -> dict:
    """Collect, validate, split, tune, train, evaluate and promote one task; returns the run summary. Scheduled and
    drift-triggered runs (the retrain-<task> deployment) set `record_versions`: see lifecycle.recording."""
    root = str(Path(root).resolve())
    configure_environment(Path(root))  # on a worker the process inherits the worker's environment, not the project's
    print(f"{task}: {reason}")
    for stage in STAGE_NAMES:
        repro_stage.with_options(retries=RETRIES.get(stage, 0), retry_delay_seconds=5)(stage, task, root)
    summary = run_summary(TaskPaths(Path(root), task))
    summary["reason"] = reason
    if record_versions:
        summary["recorded"] = record(task, root, reason)
    rebuild_site(Path(root))  # after recording: the site is no DVC output and never part of a version
    create_markdown_artifact(
        key=f"{task}-metrics", markdown=summary_markdown(summary), description=f"{task}: test metrics and reports"
    )
    decision = Path(summary["reports"]["promotion_decision"])
    if decision.exists():
        create_markdown_artifact(
            key=f"{task}-promotion", markdown=decision.read_text(), description=f"{task}: promotion decision and why"
        )
    return summary


def main() -> None:
    from lifecycle.params import load_params

    parser = argparse.ArgumentParser(description="Run the lifecycle flow for every task in params.yaml")
    parser.add_argument("--task", action="append", help="run only this task (repeatable)")
    args = parser.parse_args()
    for name in args.task or load_params("params.yaml", only=[]).tasks:
        print(summary_markdown(lifecycle(task=name)))


if __name__ == "__main__":
    main()
