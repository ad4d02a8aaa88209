"""The team setup, on one machine the way it runs on many: a `prefect server start` on PostgreSQL, a process work
pool and its worker running the registered deployments, the versions recorded to an S3 remote (moto's server), and a
fresh clone restoring them. One tiny project and one server for the whole module (the suite's time budget)."""

from __future__ import annotations

import copy
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import TINY_CLASSIFY, free_port, make_project, make_task, postgres_database, run, stop_process

pytestmark = pytest.mark.slow

POOL = "lifecycle-test"
GIT_AUTHOR = "Lifecycle Worker <worker@lifecycle.test>"
BUCKET = "lifecycle-dvc"


@dataclass
class Team:
    project: Path
    api: str  # the Prefect server's API URL
    env: dict[str, str]  # a user's terminal: the server's URL, the S3 credentials, no git identity
    logs: Path
    worker: subprocess.Popen | None = None

    def prefect(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "prefect"), *args],
            cwd=self.project,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=600,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"prefect {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{self.tail()}"
            )
        return proc

    def flow_run(self, run_id: str) -> dict[str, Any]:
        return httpx.get(f"{self.api}/flow_runs/{run_id}", timeout=30).json()

    def runs_of(self, deployment: str) -> list[dict[str, Any]]:
        body = {"deployments": {"name": {"any_": [deployment]}}, "sort": "EXPECTED_START_TIME_DESC"}
        return httpx.post(f"{self.api}/flow_runs/filter", json=body, timeout=30).json()

    def tail(self) -> str:
        return f"--- worker log ---\n{(self.logs / 'worker.log').read_text()[-6000:]}"


def start(cmd: list[str], cwd: Path, env: dict[str, str], log: Path, **kwargs: Any) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, **kwargs)


def wait_until(ready: Any, what: str, seconds: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come up in {seconds:.0f} s")
        time.sleep(0.5)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def s3_remote() -> Iterator[dict[str, str]]:
    """moto's S3 server on 127.0.0.1 with an empty bucket; the credentials it accepts."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    url = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=url, **_aws(env)).create_bucket(Bucket=BUCKET)
    yield {**env, "endpoint": url}
    server.stop()


def _aws(env: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }


@pytest.fixture(scope="module")
def team(tmp_path_factory, s3_remote) -> Iterator[Team]:
    """The README's route: server (PostgreSQL), work pool, deployments registered with it, a worker; the project's
    default DVC remote on S3. The worker's machine has no git identity: monitoring.git_author names the commits."""
    base = tmp_path_factory.mktemp("team")
    logs = base / "logs"
    logs.mkdir()
    with postgres_database("lifecycle_prefect") as database:
        port = free_port()
        api = f"http://127.0.0.1:{port}/api"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("GIT_", "BENTOML_HOME", "DVC_SITE_CACHE_DIR", "MPLCONFIGDIR"))
        }  # the project's own state dirs (set by the entry points), and git without an identity
        home = base / "home"
        home.mkdir()
        env.update(
            HOME=str(home),
            GIT_CONFIG_NOSYSTEM="1",
            PREFECT_HOME=str(base / "prefect"),
            PREFECT_API_URL=api,
            **{k: v for k, v in s3_remote.items() if k != "endpoint"},
        )
        server_env = {**env, "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://{database}"}
        server = start(
            ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            base,
            server_env,
            logs / "server.log",
            start_new_session=True,
        )
        worker = None
        try:
            params = {"tasks": ["classify"], "classify": copy.deepcopy(TINY_CLASSIFY)}
            params["classify"]["train"]["epochs"] = 1
            params["monitoring"] = {"min_rows": 20, "git_author": GIT_AUTHOR}
            project = make_project(base / "project", params)
            dvc = [sys.executable, "-m", "dvc"]
            run([*dvc, "remote", "add", "-d", "s3", f"s3://{BUCKET}/store"], project)
            run([*dvc, "remote", "modify", "s3", "endpointurl", s3_remote["endpoint"]], project)
            run(["git", "commit", "-qam", "the team's DVC remote on S3"], project)
            wait_until(lambda: answers(f"{api}/health"), "prefect server start", 120, server)
            team = Team(project, api, env, logs)
            team.prefect("work-pool", "create", POOL, "--type", "process")
            registered = subprocess.run(
                [sys.executable, "-m", "flows.deployments", "--work-pool", POOL],
                cwd=project,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            assert registered.returncode == 0, registered.stdout[-4000:]
            worker = start(
                [sys.executable, "-m", "flows.worker", "--pool", POOL, "--name", "test-worker"],
                project,
                {**env, "PREFECT_WORKER_QUERY_SECONDS": "1"},  # picks a run up within 1 s, not 10: four runs wait
                logs / "worker.log",
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # as a shell's `worker &` starts it
            )
            team.worker = worker
            yield team
        finally:
            if worker is not None and worker.poll() is None:
                worker.kill()
                worker.wait()
            stop_process(server)


def run_id(output: str) -> str:
    found = re.search(r"UUID: ([0-9a-f-]{36})", output)
    assert found, output
    return found[1]


@pytest.fixture(scope="module")
def retrained(team) -> dict[str, Any]:
    """`prefect deployment run lifecycle/retrain-classify --watch`, as a user triggers it: the flow run as the
    server has it."""
    started = time.monotonic()
    proc = team.prefect("deployment", "run", "lifecycle/retrain-classify", "--watch", "--watch-timeout", "600")
    flow_run = team.flow_run(run_id(proc.stdout))
    print(f"retrain-classify on the worker: {time.monotonic() - started:.1f} s")
    return {"cli": proc.stdout, "flow_run": flow_run}


def git(project: Path, *args: str) -> str:
    return run(["git", *args], project).stdout


def dvc(project: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout[-4000:]}"
    return proc.stdout


def test_retrain_runs_on_the_worker_and_records_a_complete_run(team, retrained):
    flow_run, project = retrained["flow_run"], team.project
    assert "Flow run finished successfully in 'Completed'" in retrained["cli"], team.tail()
    assert flow_run["state"]["type"] == "COMPLETED" and flow_run["work_pool_name"] == POOL
    assert flow_run["infrastructure_pid"], "a worker started the run in its own process"
    assert "Worker 'test-worker'" in (team.logs / "worker.log").read_text() or "test-worker" in team.tail()

    subject, author, commit = git(project, "log", "-1", "--format=%s%n%an <%ae>%n%H").splitlines()
    assert subject == f"retrain-classify run {flow_run['name']}: scheduled retraining"
    assert author == GIT_AUTHOR, "monitoring.git_author where the worker's machine has no git identity"
    committed = set(git(project, "show", "--name-only", "--format=", commit).split())
    expected = {
        "dvc.lock",
        "reports/classify/evaluate/metrics.json",
        "reports/classify/train/summary.json",
        "reports/classify/promote/decision.json",
        "reports/classify/promote/decision.md",
        "data/raw/.gitignore",
        "models/classify/.gitignore",
    }
    assert expected <= committed, committed
    assert git(project, "status", "--porcelain", "--untracked-files=no") == "", "nothing tracked left modified"
    assert "up to date" in dvc(project, "status"), "the committed lock matches the workspace"
    assert "in sync" in dvc(project, "status", "--cloud", env=team.env), "data and models are on S3"
    assert (project / ".bentoml").is_dir() and (project / ".dvc" / "site-cache").is_dir(), "state in the project"


def test_a_fresh_clone_pulls_the_recorded_run_from_s3(team, retrained, tmp_path):
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(team.project), str(clone)], tmp_path)
    env = {**os.environ, **{k: v for k, v in team.env.items() if k.startswith("AWS_")}}
    assert not (clone / "models/classify/model.pt").exists()
    dvc(clone, "pull", env=env)
    assert (clone / "models/classify/model.pt").stat().st_size > 0
    assert len((clone / "data/raw/classify/manifest.jsonl").read_text().splitlines()) > 0
    assert (clone / "data/prepared/classify/manifest.jsonl").read_bytes() == (
        team.project / "data/prepared/classify/manifest.jsonl"
    ).read_bytes()
    assert "up to date" in dvc(clone, "status", env=env), "the clone reproduces the recorded run exactly"
    assert run(["git", "status", "--porcelain"], clone).stdout == "", "pulled outputs are git-ignored, none left out"


def terminal(team: Team, run_id: str, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        flow_run = team.flow_run(run_id)
        if flow_run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") or time.monotonic() > deadline:
            return flow_run
        time.sleep(1)


def test_drift_found_by_monitor_starts_retrain_on_the_worker(team, retrained):
    """`bentoml serve` of the promoted model answers inverted images; the monitor-classify deployment, run on the
    worker, finds drift and starts retrain-classify, which the worker runs to completion."""
    from lifecycle.paths import TaskPaths
    from lifecycle.traffic import send_traffic

    project = team.project
    params = yaml.safe_load((project / "params.yaml").read_text())
    port = free_port()
    serving = start(
        ["bentoml", "serve", "lifecycle.service:Lifecycle", "--host", "127.0.0.1", "--port", str(port)],
        project,
        {**team.env, "BENTOML_HOME": str(project / ".bentoml")},
        team.logs / "serve.log",
        start_new_session=True,
    )
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/readyz"), "bentoml serve", 120, serving)
        sent = send_traffic(make_task(params), TaskPaths(project, "classify"), f"http://127.0.0.1:{port}", "invert")
    finally:
        stop_process(serving)
    assert list(sent) == ["200"], sent
    before = {r["id"] for r in team.runs_of("retrain-classify")}

    # the monitor run waits for the retraining it starts (monitoring.await_retrain_minutes) and completes with it
    proc = team.prefect("deployment", "run", "monitor/monitor-classify", "--watch", "--watch-timeout", "900")
    monitor_run = team.flow_run(run_id(proc.stdout))
    assert monitor_run["state"]["type"] == "COMPLETED" and monitor_run["work_pool_name"] == POOL
    started = [r for r in team.runs_of("retrain-classify") if r["id"] not in before]
    assert len(started) == 1, started
    assert started[0]["parameters"]["reason"].startswith("drift detected by monitor: ")
    finished = terminal(team, started[0]["id"], 600)
    assert finished["state"]["type"] == "COMPLETED", f"{finished['state']}\n{team.tail()}"
    assert finished["work_pool_name"] == POOL and finished["infrastructure_pid"], "run by the worker"


def test_a_crashed_run_is_reported_where_it_was_triggered(team, tmp_path):
    """The failure this setup had: a run in a folder without the project (what a process worker does without the
    deployment's working directory) crashes; `--watch` exits non-zero and the server has the reason in its log."""
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    proc = team.prefect(
        "deployment",
        "run",
        "lifecycle/retrain-classify",
        "--watch",
        "--job-variable",
        f"working_dir={empty}",
        check=False,
    )
    assert proc.returncode == 1 and "Flow run finished in state 'Crashed'" in proc.stdout, proc.stdout[-2000:]
    logs = team.prefect("flow-run", "logs", run_id(proc.stdout)).stdout
    assert "FileNotFoundError" in logs and "flows/training.py" in logs, logs[-2000:]


def test_the_worker_stops_on_one_sigterm(team):
    """Started as a shell's `&` starts it (SIGINT ignored), the worker still stops on a single SIGTERM."""
    worker = team.worker
    assert worker is not None and worker.poll() is None, team.tail()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, team.tail()
    assert "stopped!" in (team.logs / "worker.log").read_text()
