import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from conftest import make_task
from lifecycle.atomic import read_jsonl
from lifecycle.models import load_model
from lifecycle.stages.evaluate import evaluate
from lifecycle.stages.train import train


def test_train_then_evaluate_writes_model_metrics_and_pictures(prepared, tiny_params):
    tiny_params["classify"]["split"]["robustness"] = "thickness"  # held out of training, measured by evaluate
    tiny_params["classify"]["model"]["augment"] = {"elastic": 0.5}
    task = make_task(tiny_params)
    summary = train(task, prepared)
    assert summary["epochs_run"] == 2 and summary["precision"] in ("fp32", "bf16")
    assert (prepared.reports("train") / "augmented.png").stat().st_size > 1000
    curves = prepared.reports("train") / "live" / "plots" / "metrics"
    assert (curves / "train" / "loss.tsv").exists() and (curves / "val" / "accuracy.tsv").exists()
    loaded_task, model, info = load_model(prepared.model)
    fitted = loaded_task.cfg.model.normalize  # no weights and no model.normalize: the training split's statistics
    assert fitted.source == "training split" and summary["model"]["normalize"] == fitted.model_dump()
    assert 0.05 < fitted.mean[0] < 0.3 and 0.2 < fitted.std[0] < 0.45, "MNIST digits: dark background, white ink"
    assert loaded_task.cfg.model_copy(update={"model": task.cfg.model}) == task.cfg and not model.training
    assert info["best_epoch"] in (1, 2)

    metrics = evaluate(task, prepared)
    test_rows = [r for r in read_jsonl(prepared.split_manifest) if r["split"] == "test"]
    assert metrics["test_samples"] == len(test_rows)
    predictions = read_jsonl(prepared.reports("evaluate") / "predictions.jsonl")
    accuracy = sum(p["truth"] == p["prediction"]["label"] for p in predictions) / len(predictions)
    assert metrics["accuracy"] == pytest.approx(accuracy, abs=1e-6), "the metric agrees with the predictions file"
    assert 0 <= metrics["macro_f1"] <= 1
    per_class = json.loads((prepared.reports("evaluate") / "per_class.json").read_text())
    assert set(per_class["accuracy"]) == {str(d) for d in range(10)}
    assert metrics["robustness_family"] == "thickness" and 0 <= metrics["robustness_accuracy"] <= 1
    assert metrics["robustness_loss"] != pytest.approx(metrics["loss"]), "the test split, distorted"
    assert set(per_class["robustness_accuracy"]) == {str(d) for d in range(10)}
    figures = prepared.reports("evaluate") / "figures"
    assert (figures / "confusion.png").exists()
    assert (figures / "confusion.csv").read_text().splitlines()[0] == "actual,predicted"


def test_same_seed_same_model(prepared, tiny_params):
    train(make_task(tiny_params), prepared)
    first = torch.load(prepared.model, weights_only=True)["state_dict"]
    train(make_task(tiny_params), prepared)
    second = torch.load(prepared.model, weights_only=True)["state_dict"]
    assert all(torch.equal(first[k], second[k]) for k in first)


def _train_cli(root) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lifecycle.cli",
            "--log-level",
            "WARNING",
            "train",
            "--task",
            "classify",
            "--root",
            str(root),
            "--params",
            str(root / "params.yaml"),
        ],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _train_stage(root) -> dict:
    """The train stage run to its end in a fresh process, as DVC runs it; its summary."""
    proc = _train_cli(root)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    return json.loads((root / "reports" / "classify" / "train" / "summary.json").read_text())


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_result(prepared, tiny_params):
    """Every run in a process of its own, as the stage runs: the result must not depend on what ran before in the
    test process."""
    tiny_params["classify"]["train"].update(epochs=6, patience=6)
    (prepared.root / "params.yaml").write_text(yaml.safe_dump(tiny_params))

    reference = _train_stage(prepared.root)
    reference_weights = torch.load(prepared.model, weights_only=True)["state_dict"]
    prepared.checkpoint.unlink()
    prepared.model.unlink()

    proc = _train_cli(prepared.root)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if prepared.checkpoint.exists():
            state = torch.load(prepared.checkpoint, weights_only=True)
            if 1 <= state["epoch"] < 6:
                os.kill(proc.pid, signal.SIGKILL)
                break
        time.sleep(0.05)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "training was killed mid-run"
    assert not prepared.model.exists(), "a killed run leaves no model file"
    killed_at = torch.load(prepared.checkpoint, weights_only=True)["epoch"]

    resumed = _train_stage(prepared.root)
    assert resumed["resumed_from_epoch"] == killed_at >= 1
    assert resumed["best_val_accuracy"] == reference["best_val_accuracy"]
    assert resumed["best_epoch"] == reference["best_epoch"]
    weights = torch.load(prepared.model, weights_only=True)["state_dict"]
    assert all(torch.equal(weights[k], reference_weights[k]) for k in weights)


def test_evaluate_reports_each_group_and_the_groups_training_never_saw(promoted_all):
    """asr's tiny test voice is new to training while its accent (en-us) is not; ocr's test family is held out;
    detect groups scenes by object count, all of them seen."""
    for name, grouping, unseen in (("asr", "voice", True), ("asr", "accent", False), ("ocr", "family", True)):
        paths = promoted_all[name][0]
        metrics = json.loads((paths.reports("evaluate") / "metrics.json").read_text())
        groups = json.loads((paths.reports("evaluate") / "groups.json").read_text())[grouping]
        primary = metrics["primary_metric"]
        assert sum(g["samples"] for g in groups.values()) == metrics["test_samples"]
        assert all(g["seen_in_training"] is not unseen for g in groups.values()), (name, grouping, groups)
        if unseen:  # every test sample is in an unseen group: the unseen figure is the whole split's
            assert metrics[f"unseen_{grouping}_{primary}"] == pytest.approx(metrics[primary], abs=1e-6)
        else:
            assert f"unseen_{grouping}_{primary}" not in metrics
    detect = promoted_all["detect"][0].reports("evaluate")
    objects = json.loads((detect / "groups.json").read_text())["objects"]
    assert set(objects) <= {"1-2", "3-4", "5 or more"} and all(g["seen_in_training"] for g in objects.values())
    card = (promoted_all["asr"][0].root / "reports" / "asr" / "promote" / "model_card.md").read_text()
    assert "| voice | samples | seen in training | cer | exact_match | wer |" in card
