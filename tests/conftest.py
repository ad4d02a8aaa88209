"""Shared fixtures: tiny configs, a throwaway project copy, and library state kept in a temp dir."""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

if TYPE_CHECKING:
    from lifecycle.paths import TaskPaths
    from lifecycle.registry import StoredModel
    from lifecycle.tasks import Task

REPO = Path(__file__).resolve().parents[1]
_STATE = Path(tempfile.mkdtemp(prefix="lifecycle-tests-"))


def pytest_configure(config: pytest.Config) -> None:
    """Before any test module imports a library: telemetry off, all library state under a temp dir."""
    from lifecycle.runtime import PREFECT_STARTUP, TELEMETRY_OFF

    os.environ.update({**TELEMETRY_OFF, **PREFECT_STARTUP})
    os.environ.update(
        {
            "PREFECT_HOME": str(_STATE / "prefect"),
            "BENTOML_HOME": str(_STATE / "bentoml"),
            "DVC_SITE_CACHE_DIR": str(_STATE / "dvc-site"),
            "MPLCONFIGDIR": str(_STATE / "matplotlib"),
            "GIT_AUTHOR_NAME": "lifecycle tests",
            "GIT_AUTHOR_EMAIL": "tests@lifecycle.local",
            "GIT_COMMITTER_NAME": "lifecycle tests",
            "GIT_COMMITTER_EMAIL": "tests@lifecycle.local",
        }
    )
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ["PATH"].split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ["PATH"]
    # BentoML binds its model store to BENTOML_HOME at the store's first use in a process, for good. Bind it to the
    # session's store now: a test that points BENTOML_HOME elsewhere for its own processes must not, by running
    # first in this process, send every later test's models there.
    import bentoml

    bentoml.models.list()


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_STATE, ignore_errors=True)


TINY_CLASSIFY: dict[str, Any] = {
    "collect": {"limit": 200},
    "validate": {"min_samples": 50, "min_class_share": 0.05, "max_quarantine_share": 0.2},
    "split": {"train": 0.6, "val": 0.2, "test": 0.2},
    "model": {"width": 4},
    "train": {
        "epochs": 2,
        "batch_size": 32,
        "lr": 0.01,
        "progress": False,
        "augment": [{"name": "RandomAffine", "args": {"degrees": 10}}],
    },
    "tune": {"enabled": False},  # DVC needs every section a stage lists; tests of tuning switch it on
    "evaluate": {"batch_size": 64},
    "promote": {"min_delta": 0.0, "serving_check_samples": 16, "export_onnx": False},  # export: tens of seconds
}


TINY_DETECT: dict[str, Any] = {
    "collect": {"scenes": 60, "canvas": 64, "min_digit_px": 12, "max_digit_px": 24, "max_digits": 3},
    "validate": {"min_samples": 20, "min_class_share": 0.02, "max_quarantine_share": 0.2},
    "split": {"train": 0.6, "val": 0.2, "test": 0.2},
    "model": {"input_size": 64, "width": 8, "score_threshold": 0.001},  # an untrained model still answers
    "train": {
        "epochs": 2,
        "batch_size": 8,
        "lr": 0.01,
        "progress": False,
        "augment": [{"name": "RandomAffine", "args": {"degrees": 0, "translate": [0.1, 0.1]}}],
    },
    "tune": {"enabled": False},
    "evaluate": {"batch_size": 32},
    "promote": {"min_delta": 0.0, "serving_check_samples": 8},
}


TINY_OCR: dict[str, Any] = {
    "collect": {"lines": 60, "max_chars": 8, "min_font_px": 14, "max_font_px": 20},
    "validate": {"min_samples": 20, "max_quarantine_share": 0.2},
    "split": {"train": 0.6, "val": 0.2, "test": 0.2},
    "model": {"width": 4, "hidden": 16, "max_width": 256},
    "train": {
        "epochs": 2,
        "batch_size": 8,
        "lr": 0.01,
        "progress": False,
        "augment": [{"name": "GaussianBlur", "args": {"kernel_size": 3, "sigma": [0.1, 1.0]}}],
    },
    "tune": {"enabled": False},
    "evaluate": {"batch_size": 32},
    "promote": {"min_delta": 0.0, "serving_check_samples": 8, "export_onnx": False},
}


TINY_ASR: dict[str, Any] = {
    "collect": {
        "utterances": 80,
        "max_words": 3,
        "workers": 2,
        "voices": {"train": ["en-us+m1", "en+f1", "en-029+m7"], "val": ["en-us+m3"], "test": ["en-us+f1"]},
    },
    "validate": {"min_samples": 20, "min_class_share": 0.0, "max_quarantine_share": 0.2},
    "split": {"train": 0.6, "val": 0.2, "test": 0.2},
    "model": {
        "n_mels": 16,
        "normalization": "cmvn",
        "vocabulary_decoding": "lexicon",
        "width": 4,
        "hidden": 16,
        "streaming": {"above_seconds": 5, "chunk_seconds": 1, "context_seconds": 0.5, "max_seconds": 20},
    },
    "train": {"epochs": 2, "batch_size": 8, "lr": 0.01, "progress": False},
    "tune": {"enabled": False},
    "evaluate": {"batch_size": 32},
    "promote": {"min_delta": 0.0, "serving_check_samples": 8},
}


@pytest.fixture
def tiny_params() -> dict[str, Any]:
    return {"tasks": ["classify"], "classify": copy.deepcopy(TINY_CLASSIFY)}


def make_task(params: dict[str, Any], name: str = "classify") -> Task:
    from lifecycle.params import parse_params
    from lifecycle.tasks import build_task

    return build_task(name, parse_params(params, only=[name]).task(name))


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed with exit {proc.returncode}:\n{proc.stdout[-4000:]}")
    return proc


def label_studio_export(tasks: list[dict], results: list[list[dict]], cancelled=(), first_id: int = 1) -> list[dict]:
    """A Label Studio JSON export as Label Studio writes it: each task with its id, data, predictions and one
    annotation (id, completed_by, result regions with ids, was_cancelled, ground_truth, lead_time)."""
    items = []
    for i, (item, result) in enumerate(zip(tasks, results)):
        regions = [{"id": f"r{i}-{n}", **region} for n, region in enumerate(result)]
        annotation = {"id": 1000 + i, "completed_by": 1, "result": [] if i in cancelled else regions}
        annotation |= {"was_cancelled": i in cancelled, "ground_truth": False, "lead_time": 4.2}
        items.append({"id": first_id + i, **item, "annotations": [annotation]})
    return items


def make_project(root: Path, tiny_params: dict[str, Any]) -> Path:
    """A git + DVC copy of the repository's pipeline (code, dvc.yaml, flows) with tiny params, committed."""
    root.mkdir()
    for item in ("src", "flows", ".dvcignore", ".gitignore"):
        source = REPO / item
        if source.is_dir():
            shutil.copytree(source, root / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, root / item)
    for task in tiny_params["tasks"]:
        (root / "data" / "incoming" / task).mkdir(parents=True)
        (root / "data" / "incoming" / task / ".gitkeep").touch()
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params, sort_keys=False))
    from lifecycle.pipeline import dvc_yaml_text, tasks_in

    # what `lifecycle dvc-yaml` writes, in this process: a CLI start costs seconds
    (root / "dvc.yaml").write_text(dvc_yaml_text(tasks_in(root / "params.yaml"), root / "src"), encoding="utf-8")
    run(["git", "init", "-q"], root)
    run([sys.executable, "-m", "dvc", "init", "-q"], root)
    run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "tiny project"], root)
    return root


@pytest.fixture
def prepared(tmp_path: Path, tiny_params: dict[str, Any]):
    """Tiny data collected and split in a temp root, ready for training."""
    from lifecycle.paths import TaskPaths
    from lifecycle.stages.collect import run as collect
    from lifecycle.stages.split import run as split

    paths = TaskPaths(tmp_path, "classify")
    collect(make_task(tiny_params), paths)
    split(make_task(tiny_params), paths)
    return paths


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for every test that runs a flow (a fresh database takes ~25 s to migrate)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
        # At session teardown pytest has closed the captured streams Prefect's console handler writes to.
        logging.getLogger("prefect").setLevel(logging.WARNING)


def import_flow(project: Path, module: str, name: str):
    """A flow object from the project copy's flows/ package."""
    import importlib

    sys.path.insert(0, str(project))
    try:
        return getattr(importlib.import_module(f"flows.{module}"), name)
    finally:
        sys.path.remove(str(project))


@pytest.fixture(scope="session")
def promoted_all(tmp_path_factory) -> dict[str, tuple[TaskPaths, dict, StoredModel]]:
    """One tiny project where classify, detect, ocr and asr are trained, evaluated and promoted: the production models
    of the test store. Returns task -> (paths, params, stored model)."""
    import bentoml

    from lifecycle import registry
    from lifecycle.paths import TaskPaths
    from lifecycle.stages.collect import run as collect
    from lifecycle.stages.evaluate import evaluate
    from lifecycle.stages.promote import promote
    from lifecycle.stages.split import run as split
    from lifecycle.stages.train import train

    root = tmp_path_factory.mktemp("promoted")
    params = {
        "tasks": ["classify", "detect", "ocr", "asr"],
        "classify": copy.deepcopy(TINY_CLASSIFY),
        "detect": copy.deepcopy(TINY_DETECT),
        "ocr": copy.deepcopy(TINY_OCR),
        "asr": copy.deepcopy(TINY_ASR),
        "serving": {"log_dir": str(root / "logs" / "requests")},
        "monitoring": {
            "min_rows": 20,
            "push": False,
            "capture_inputs": True,
            "capture_rate": 1.0,
            "capture_dir": str(root / "data" / "captured"),
            "await_retrain_minutes": 0.05,  # no worker runs deployments here: a monitor waits 3 s for its retraining
        },
    }
    params["classify"]["train"].update(epochs=4, batch_size=16)
    for name in params["tasks"]:
        params[name]["serve"] = {"max_batch_size": 16, "max_latency_ms": 10000}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    promoted = {}
    for name in params["tasks"]:
        paths = TaskPaths(root, name)
        for stage in (collect, split, train, evaluate):
            stage(make_task(params, name), paths)
        for model in registry.versions(name):
            bentoml.models.delete(model.tag)
        decision = promote(make_task(params, name), paths)
        assert decision["promoted"], decision["summary"]
        promoted[name] = (paths, params, registry.get(decision["stored_as"]))
    return promoted


@pytest.fixture(scope="session")
def promoted(promoted_all):
    """The tiny classify model of `promoted_all`: (paths, params, stored model)."""
    return promoted_all["classify"]


@dataclass
class Server:
    url: str
    paths: TaskPaths
    stored: StoredModel
    log_dir: Path
    offline: dict  # sample_id -> the evaluate stage's prediction
    rows: list  # test-split manifest rows

    def image(self, row: dict) -> bytes:
        return (self.paths.raw / row["path"]).read_bytes()

    def classify(self, client: Any, data: bytes, name: str = "digit.png", **kwargs) -> Any:
        return client.post(f"{self.url}/classify", files={"image": (name, data, "image/png")}, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(promoted):
    """`bentoml serve` of the promoted tiny model on a free 127.0.0.1 port, for the whole session."""
    from lifecycle.atomic import read_jsonl
    from lifecycle.data import rows_of_split

    paths, params, stored = promoted
    log_path = paths.root / "server.log"
    log = log_path.open("w")
    proc, url = start_bentoml(paths.root, log, log_path)
    try:
        offline = {r["sample_id"]: r["prediction"] for r in read_jsonl(paths.reports("evaluate") / "predictions.jsonl")}
        yield Server(
            url,
            paths,
            stored,
            Path(params["serving"]["log_dir"]) / "classify",
            offline,
            rows_of_split(paths.split_manifest, "test"),
        )
    finally:
        stop_process(proc)
        log.close()


def start_bentoml(cwd: Path, log: Any, log_path: Path, env: dict[str, str] | None = None) -> tuple[Any, str]:
    """`bentoml serve lifecycle.service:Lifecycle` on a free 127.0.0.1 port in its own process group, once it
    answers /readyz (at most 120 s; its log's tail otherwise). Returns the process and its URL."""
    port = free_port()
    bentoml = str(Path(sys.executable).parent / "bentoml")
    proc = subprocess.Popen(
        [bentoml, "serve", "lifecycle.service:Lifecycle", "--host", "127.0.0.1", "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while not _ready(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise AssertionError(f"bentoml serve did not start:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.3)
    return proc, url


def stop_process(proc: Any) -> None:
    """SIGTERM to the process group, SIGKILL after 30 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}  # trust auth, as CI runs it


@contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """A new database on the PostgreSQL at 127.0.0.1:5432, dropped afterwards; yields `user@host:port/name` (the
    part of a URL after the driver). Skips the test, saying why, when no PostgreSQL answers there."""
    import psycopg

    try:
        admin = psycopg.connect(**POSTGRES, connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as e:
        pytest.skip(f"no PostgreSQL answers at {POSTGRES['host']}:{POSTGRES['port']} (user postgres, trust auth): {e}")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES['user']}@{POSTGRES['host']}:{POSTGRES['port']}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


# A script's head that runs `lifecycle` CLI commands in its one process (the imports paid once): `run(*argv)` gives
# {"code", "out"}. A test appends its commands and prints "ANSWERS <json>" for `in_own_store`.
CLI_IN_PROCESS = """
import contextlib, io, json, sys
from lifecycle.cli import main

def run(*argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return {"code": code, "out": out.getvalue()}
"""


def in_own_store(root, store, script: str, *args: str) -> dict:
    """`script`'s answers, run in a fresh process in `root` whose BentoML store is `store` (so that the session's
    store keeps its production models)."""
    env = {**os.environ, "BENTOML_HOME": str(store)}
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0 and "ANSWERS " in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(proc.stdout.split("ANSWERS ", 1)[1])
