"""Drift monitoring against real traffic: `lifecycle traffic` posts to `bentoml serve`, Evidently compares the
request log with the promoted model's reference."""

import json

import pytest

from conftest import make_task
from lifecycle.data import rows_of_split
from lifecycle.monitoring import monitor
from lifecycle.operations import MonitoringConfig
from lifecycle.traffic import send_traffic

pytestmark = pytest.mark.slow

EXPECTED = {  # the descriptors each image shift must move (rotation moves the model's view, not these)
    "noise": {"input.intensity_mean", "input.sharpness"},
    "blur": {"input.sharpness"},
    "invert": {"input.intensity_mean"},
    "scale": {"input.intensity_mean"},
    "rotate": set(),
}


def traffic_then_monitor(server, promoted, tmp_path, shift: str, **cfg):
    paths, params, _ = promoted
    task = make_task(params)
    count = len(rows_of_split(paths.split_manifest, "test"))
    assert send_traffic(task, paths, server.url, shift) == {"200": count}
    config = MonitoringConfig(**{"min_rows": 20, "last_n": count, **cfg})
    return monitor("classify", config, server.log_dir.parent, tmp_path / "drift")


def test_in_distribution_traffic_is_not_drift(server, promoted, tmp_path):
    decision = traffic_then_monitor(server, promoted, tmp_path, "none")
    assert decision["status"] == "no drift", decision["reason"]
    assert not any(decision["drifted_columns"].values())
    assert (tmp_path / "drift" / decision["report_html"]).stat().st_size > 10_000
    assert (tmp_path / "drift" / decision["report_json"]).exists()
    assert set(decision["shares"]) == {"descriptors", "prediction", "embedding"}


@pytest.mark.parametrize("shift", sorted(EXPECTED))
def test_shifted_traffic_is_drift_naming_what_moved(server, promoted, tmp_path, shift):
    decision = traffic_then_monitor(server, promoted, tmp_path, shift)
    assert decision["status"] == "drift" and decision["drift"], decision["reason"]
    assert EXPECTED[shift] <= set(decision["drifted_columns"]["descriptors"]), decision["drifted_columns"]
    assert decision["reason"].count("drifted") >= 1


def test_too_few_rows_is_not_enough_data_never_drift(server, promoted, tmp_path):
    decision = traffic_then_monitor(server, promoted, tmp_path, "invert", min_rows=10_000)
    assert decision["status"] == "not enough data" and not decision["drift"]
    assert "at least 10000 needed" in decision["reason"] and decision["report_html"] is None
    assert list((tmp_path / "drift").glob("*.decision.json"))


def test_drift_starts_the_retrain_deployment_with_the_reason_and_no_drift_does_not(server, promoted, prefect_harness):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from conftest import REPO, import_flow

    paths, params, _ = promoted
    ids = {d.name: d.apply() for d in import_flow(REPO, "deployments", "deployments")(paths.root)}
    assert set(ids) == {f"{kind}-{task}" for kind in ("retrain", "monitor") for task in params["tasks"]}
    monitor_flow = import_flow(REPO, "monitoring", "monitor")
    task = make_task(params)

    def retrain_runs():
        with get_client(sync_client=True) as client:
            only = DeploymentFilter(id=DeploymentFilterId(any_=[ids["retrain-classify"]]))
            return {run.id: run for run in client.read_flow_runs(deployment_filter=only)}

    # a first report over whatever earlier tests logged (which may be drift, and then fail waiting for its retraining)
    monitor_flow(task="classify", root=str(paths.root), return_state=True)
    send_traffic(task, paths, server.url, "invert")
    before = retrain_runs()
    # no worker runs the retraining it starts: the monitor run fails, naming that run, once it has waited
    # monitoring.await_retrain_minutes (3 s here)
    failed = monitor_flow(task="classify", root=str(paths.root), return_state=True)
    (started,) = [run for run_id, run in retrain_runs().items() if run_id not in before]
    assert failed.is_failed() and f"{started.name} ({started.id}), started on drift, ended Scheduled" in failed.message
    drifted = json.loads(max(paths.drift_reports.glob("*.decision.json")).read_text())
    assert drifted["drift"] and "input.intensity_mean" in drifted["drifted_columns"]["descriptors"]
    assert started.parameters["reason"] == f"drift detected by monitor: {drifted['reason']}"
    assert started.parameters["record_versions"] is True and started.parameters["task"] == "classify"

    send_traffic(task, paths, server.url, "none")
    calm = monitor_flow(task="classify", root=str(paths.root))
    assert calm["status"] == "no drift" and "retrain_flow_run" not in calm
    assert set(retrain_runs()) == set(before) | {started.id}, "no drift starts no retraining"

    from prefect.artifacts import Artifact

    shown = Artifact.get("classify-drift").data  # the flow's artifact gives the pages' paths
    report = paths.drift_reports / calm["report_html"]
    assert f"Report site: `{paths.root / 'reports' / 'index.html'}`" in shown and f"`{report}`" in shown
    assert f"href='drift/classify/{calm['report_html']}'" in (paths.root / "reports" / "index.html").read_text()
