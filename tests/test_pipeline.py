"""The whole pipeline through real DVC and through the real Prefect flow, in a throwaway project copy."""

import json
import sys

import pytest
import yaml

from conftest import import_flow, run

pytestmark = pytest.mark.slow
STAGES = ("collect", "validate", "split", "tune", "train", "evaluate", "promote")


def dvc(project, *args):
    return run([sys.executable, "-m", "dvc", *args], project)


def ran_stages(output: str) -> list[str]:
    return sorted(line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage"))


def test_dvc_repro_runs_once_then_only_what_changed(project):
    first = dvc(project, "repro")
    assert ran_stages(first.stdout) == sorted(f"{s}@classify" for s in STAGES)
    metrics = json.loads((project / "reports/classify/evaluate/metrics.json").read_text())
    assert 0 <= metrics["accuracy"] <= 1
    assert (project / "dvc.lock").exists()
    shown = dvc(project, "metrics", "show", "--json").stdout
    assert '"accuracy"' in shown

    assert ran_stages(dvc(project, "repro").stdout) == [], "a second repro is a no-op"

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["classify"]["train"]["lr"] = 0.02
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    expected = ["evaluate@classify", "promote@classify", "train@classify", "tune@classify"]  # tune searches around train
    assert ran_stages(dvc(project, "repro").stdout) == expected


def test_prefect_flow_runs_the_dvc_stages_and_publishes_metrics(project, prefect_harness):
    from prefect.artifacts import Artifact

    lifecycle = import_flow(project, "training", "lifecycle")
    summary = lifecycle(task="classify", root=str(project))
    artifact = Artifact.get("classify-metrics")
    decision = Artifact.get("classify-promotion")
    assert summary["test"]["test_samples"] > 0
    assert 0 <= summary["test"]["accuracy"] <= 1
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(lock["stages"]) == {f"{s}@classify" for s in STAGES}
    assert artifact is not None and "test accuracy" in artifact.data and "Last promotion decision:" in artifact.data
    assert summary["promotion"]["summary"] and decision.data.startswith("# classify: ")
    assert ran_stages(dvc(project, "repro").stdout) == [], "the flow's run is what dvc.lock records"


def test_bad_params_stop_before_any_work(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["classify"]["train"]["epochs"] = 0
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run([sys.executable, "-m", "lifecycle.cli", "collect", "--task", "classify"], project, check=False)
    assert proc.returncode == 2
    assert "classify.train.epochs: Input should be greater than or equal to 1" in proc.stdout
    assert not (project / "data" / "raw").exists()
