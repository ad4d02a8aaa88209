"""The whole pipeline through real DVC and through the real Prefect flow, in a throwaway project copy."""

import copy
import json
import sys

import pytest
import yaml

from conftest import TINY_CLASSIFY, TINY_DETECT, import_flow, make_project, run
from lifecycle.pipeline import STAGE_NAMES

pytestmark = pytest.mark.slow


def dvc(project, *args):
    return run([sys.executable, "-m", "dvc", *args], project)


def ran_stages(output: str) -> list[str]:
    return sorted(line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage"))


def changed_stages(status: str) -> list[str]:
    return sorted(line.rstrip(":") for line in status.splitlines() if line.endswith(":") and not line[0].isspace())


def test_flow_then_dvc_repro_run_every_stage_once_then_only_what_changed(tmp_path, prefect_harness, monkeypatch):
    """One project, two tasks: classify through the Prefect flow (which records and pushes the versions), then
    detect, tuning included, through plain `dvc repro`. No stage knows which task it runs, and the flow's run is
    what dvc.lock records: repro runs detect's stages only, a second repro nothing, a params change what it touches.
    Then classify's reviewed captures reach the next run (issue 22's loop; see `reviewed_captures_reach_the_next_run`).
    The project's stages keep their models in a store of their own (BENTOML_HOME), out of the session's."""
    import bentoml
    from prefect.artifacts import Artifact

    bentoml.models.list()  # this process's store is fixed on first use: it stays the session's, as later tests need
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))  # what the stages' processes inherit
    params = {
        "tasks": ["classify", "detect"],
        "classify": copy.deepcopy(TINY_CLASSIFY),
        "detect": copy.deepcopy(TINY_DETECT),
    }
    # deliberately weak (one epoch at 1e-6): unsure of every captured input, and beaten by the model trained on them
    params["classify"]["train"].update(epochs=1, lr=1e-6)
    params["detect"]["tune"] = {
        "enabled": True,
        "trials": 2,
        "parallel": 1,
        "min_epochs": 1,
        "sampler_startup_trials": 2,
        "space": {"train.lr": {"low": 0.005, "high": 0.02, "log": True}},
    }
    params["detect"]["train"]["epochs"] = 1  # tuning trials run train.epochs: one epoch each, as before
    project = make_project(tmp_path / "project", params)
    remote = project.parent / "dvc-remote"
    dvc(project, "remote", "add", "-d", "local", str(remote))
    run(["git", "commit", "-qam", "a local DVC remote"], project)

    lifecycle = import_flow(project, "training", "lifecycle")
    summary = lifecycle(task="classify", root=str(project), reason="drift detected by test", record_versions=True)
    artifact = Artifact.get("classify-metrics")
    decision = Artifact.get("classify-promotion")
    log = run(["git", "log", "-1", "--format=%s%n%H", "--", "dvc.lock"], project).stdout.splitlines()
    assert log[0].startswith("retrain-classify run ") and log[0].endswith(": drift detected by test")
    assert summary["recorded"] == log[1] and summary["reason"] == "drift detected by test"
    assert run(["git", "status", "--porcelain", "dvc.lock"], project).stdout == "", "dvc.lock is committed"
    assert "are in sync" in dvc(project, "status", "--cloud").stdout, "data and models are pushed"
    assert any(remote.rglob("*")), "the remote holds the cache"
    assert summary["test"]["test_samples"] > 0
    assert 0 <= summary["test"]["accuracy"] <= 1
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(lock["stages"]) == {f"{s}-classify" for s in STAGE_NAMES}
    assert artifact is not None and "test accuracy" in artifact.data and "Last promotion decision:" in artifact.data
    assert summary["promotion"]["summary"] and decision.data.startswith("# classify: ")
    site = project / "reports" / "index.html"
    assert f"report site: `{site}`" in artifact.data and "model card: `" in artifact.data
    assert "<h2 id='classify'>" in site.read_text() and (project / "reports/classify/promote/model_card.md").exists()
    shown = dvc(project, "metrics", "show", "--json").stdout
    assert '"accuracy"' in shown

    assert ran_stages(dvc(project, "repro").stdout) == sorted(f"{s}-detect" for s in STAGE_NAMES)
    metrics = json.loads((project / "reports/detect/evaluate/metrics.json").read_text())
    assert metrics["primary_metric"] == "map_50" and 0 <= metrics["map_50"] <= 1 and 0 <= metrics["mean_iou"] <= 1
    assert (project / "reports/detect/evaluate/figures/test_scenes.png").stat().st_size > 0
    tuned = yaml.safe_load((project / "models/detect/tuned.yaml").read_text())
    assert tuned["overrides"] == (
        {"train.lr": tuned["best_params"]["train.lr"]} if tuned["decision"] == "tuned" else {}
    )
    assert json.loads((project / "reports/detect/validate/result.json").read_text())["success"]
    decision = json.loads((project / "reports/detect/promote/decision.json").read_text())
    assert decision["promoted"] or decision["reasons"]

    assert ran_stages(dvc(project, "repro").stdout) == [], "a second repro is a no-op"
    run([sys.executable, "-m", "lifecycle.cli", "report"], project)
    assert "<h2 id='detect'>" in site.read_text() and changed_stages(dvc(project, "status").stdout) == []
    assert "reports/index.html" not in run(["git", "status", "--porcelain"], project).stdout, "the site is no version"
    # code deps are precise: another task's code changes none of these stages, a task's own code only its own
    asr_code = project / "src/lifecycle/tasks/asr/codec.py"
    asr_code.write_text(asr_code.read_text() + "\n# edited\n")
    assert changed_stages(dvc(project, "status").stdout) == []
    detect_code = project / "src/lifecycle/tasks/detect/outputs.py"
    detect_code.write_text(detect_code.read_text() + "\n# edited\n")
    detect_stages = [f"{s}-detect" for s in STAGE_NAMES]
    assert changed_stages(dvc(project, "status").stdout) == sorted(detect_stages)
    # a train param changes the stages around training (the captured-samples loop below runs them)
    params["classify"]["train"]["lr"] = 2e-6
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    touched = ["evaluate-classify", "promote-classify", "train-classify", "tune-classify"]  # tune: around train
    assert changed_stages(dvc(project, "status").stdout) == sorted(touched + detect_stages)

    reviewed_captures_reach_the_next_run(project, params, tmp_path)


def lock_hashes(project):
    stages = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return {f"{s}:{e['path']}": e["md5"] for s, st in stages.items() for e in st.get("deps", []) + st.get("outs", [])}


def reviewed_captures_reach_the_next_run(project, params, tmp_path):
    """Issue 22's loop for classify, on through the next lifecycle run: the production model (the weak one the
    flow promoted) sees new, unsure inputs (inverted digits); they are labeled, reviewed and imported with the
    CLI, and the next `dvc repro` collects them: dvc.lock records the new landing zone, raw data, split and model,
    and the promoted model version carries the new data's DVC hash."""
    import io

    import numpy as np
    from PIL import Image

    from conftest import label_studio_export
    from lifecycle.atomic import read_jsonl
    from lifecycle.capture import capture_input
    from lifecycle.data import rows_of_split

    def cli(*args):
        return run([sys.executable, "-m", "lifecycle.cli", *args], project).stdout

    first = lock_hashes(project)
    captured = project / "data" / "captured" / "classify"
    truth = {}
    for n, row in enumerate(rows_of_split(project / "data/prepared/classify/manifest.jsonl", "test")[:6]):
        inverted = Image.fromarray(255 - np.asarray(Image.open(project / "data/raw/classify" / row["path"])))
        buffer = io.BytesIO()
        inverted.save(buffer, format="PNG")
        truth[capture_input(captured, f"req{n}", "digit.png", buffer.getvalue(), 50).name] = row["label"]
    cli("label", "--task", "classify")
    tasks = json.loads(sorted((project / "reports/labeling/classify").glob("*-import.json"))[-1].read_text())
    assert len(tasks) == 6, "a weak model is unsure of every input"
    choice = {"from_name": "label", "to_name": "image", "type": "choices"}
    results = [[{**choice, "value": {"choices": [truth[t["data"]["capture"]]]}}] for t in tasks]
    (tmp_path / "export.json").write_text(json.dumps(label_studio_export(tasks, results, cancelled={0})))
    out = cli("label", "--task", "classify", "--import", str(tmp_path / "export.json"))
    assert "5 reviewed samples imported" in out and "1 cancelled skipped" in out

    params["classify"]["train"].update(epochs=6, batch_size=16, lr=0.01)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(project, "repro", "promote-classify")
    second = lock_hashes(project)
    for key in (
        "collect-classify:data/incoming/classify",
        "collect-classify:data/raw/classify",
        "split-classify:data/prepared/classify",
        "train-classify:models/classify/model.pt",
    ):
        assert second[key] != first[key], f"dvc.lock records the new {key}"
    rows = [r for r in read_jsonl(project / "data/raw/classify/manifest.jsonl") if r["source"] == "captured"]
    assert sorted(r["label"] for r in rows) == sorted(truth[t["data"]["capture"]] for t in tasks[1:])
    split_summary = json.loads((project / "reports/classify/split/summary.json").read_text())
    assert split_summary["groups"]["captured"]["samples"] == 5
    decision = json.loads((project / "reports/classify/promote/decision.json").read_text())
    assert decision["promoted"], decision["summary"]
    code = f"from lifecycle import registry; print(registry.get({decision['stored_as']!r}).metadata['dvc_data_md5'])"
    assert run([sys.executable, "-c", code], project).stdout.strip() == second["collect-classify:data/raw/classify"]


def test_bad_params_stop_before_any_work(tmp_path, tiny_params):
    params = copy.deepcopy(tiny_params)
    params["classify"]["train"]["epochs"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run([sys.executable, "-m", "lifecycle.cli", "collect", "--task", "classify"], tmp_path, check=False)
    assert proc.returncode == 2
    assert "classify.train.epochs: Input should be greater than or equal to 1" in proc.stdout
    assert not (tmp_path / "data" / "raw").exists()


def test_dvc_experiments_run_on_the_real_params_file(tmp_path):
    """`dvc exp run -S` rewrites params.yaml as YAML 1.2 (quotes around "yes", "no", "on", "off" dropped); the
    project reads it the same way, so an experiment over the real params.yaml (made tiny) runs and is listed."""
    from ruamel.yaml import YAML

    from conftest import REPO, TINY_ASR, TINY_CLASSIFY, TINY_DETECT, TINY_OCR
    from lifecycle.params import load_params

    yaml_rt = YAML()  # round trip: the real file's quoting and comments are kept
    yaml_rt.preserve_quotes = True
    params = yaml_rt.load((REPO / "params.yaml").read_text())
    for name, tiny in (("classify", TINY_CLASSIFY), ("detect", TINY_DETECT), ("ocr", TINY_OCR), ("asr", TINY_ASR)):
        for section, values in tiny.items():
            params[name][section].update(copy.deepcopy(values))
    project = make_project(tmp_path / "project", json.loads(json.dumps(params)))
    with (project / "params.yaml").open("w") as f:
        yaml_rt.dump(params, f)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "the real params, tiny"], project)
    assert '"yes"' in (project / "params.yaml").read_text(), "the vocabulary is quoted before DVC rewrites it"

    # up to validation, which already reads params and writes a metric: training adds time, not coverage
    dvc(project, "exp", "run", "-S", "classify.validate.min_samples=40", "validate-classify")
    rewritten = (project / "params.yaml").read_text()
    assert '"yes"' not in rewritten, "DVC wrote YAML 1.2, without the quotes"
    assert True in yaml.safe_load(rewritten)["asr"]["collect"]["vocabulary"], "which YAML 1.1 would read as booleans"
    assert "yes" in load_params(project / "params.yaml").task("asr").collect.vocabulary
    shown = json.loads(dvc(project, "exp", "show", "--json").stdout)
    experiments = [e for commit in shown for e in (commit.get("experiments") or [])]
    assert experiments, f"dvc exp show lists no experiment: {shown}"
    data = experiments[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["classify"]["validate"]["min_samples"] == 40
    assert data["metrics"]["reports/classify/validate/result.json"]["data"]["success"] is True
