"""Promote: gate the candidate (absolute thresholds, and beating production on the same current test set),
check that it answers like offline evaluation once loaded the way the service loads it, then make it the
production model in the BentoML model store. The report says why, either way."""

from __future__ import annotations

import json
import logging
import random
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lifecycle import registry
from lifecycle.atomic import read_jsonl, write_json, write_text
from lifecycle.config import ConfigError
from lifecycle.data import rows_of_split
from lifecycle.devices import resolve_device
from lifecycle.export import NotExportable, export
from lifecycle.modelcard import write_model_card
from lifecycle.models import IncompatibleModel, load_model
from lifecycle.monitoring import REFERENCE
from lifecycle.paths import TaskPaths
from lifecycle.reporting import read_json
from lifecycle.serving import Predictor
from lifecycle.site import rebuild as rebuild_site
from lifecycle.stages.evaluate import evaluate, metric_values, predict_rows
from lifecycle.tasks import Task

log = logging.getLogger(__name__)
ONNX_FILE = "model.onnx"  # in the stored version, its contract beside it


@dataclass
class Decision:
    task: str
    promoted: bool
    summary: str = ""
    reasons: list[str] = field(default_factory=list)  # what stopped the promotion; empty when promoted
    candidate: dict[str, float] = field(default_factory=dict)
    production_before: str | None = None
    production_metric: float | None = None
    serving_check: dict[str, Any] = field(default_factory=dict)
    stored_as: str | None = None
    judged: str = ""  # the model file judged, or the tag of the stored candidate
    onnx: str | None = None  # the ONNX export's file name in the stored version, when it could be exported
    notes: list[str] = field(default_factory=list)  # what the decision could not take into account, and why


def threshold_failures(task: Task, metrics: dict[str, Any]) -> list[str]:
    gate = task.cfg.promote
    failures = []
    for bound, limits in (("min", gate.min), ("max", gate.max)):
        for name, limit in limits.items():
            if name not in metrics:
                raise ConfigError(f"{task.name}.promote.{bound}.{name}: no such test metric (have {sorted(metrics)})")
            value = metrics[name]
            if (bound == "min" and value < limit) or (bound == "max" and value > limit):
                failures.append(f"test {name} {value:.4f} is {'below' if bound == 'min' else 'above'} {limit}")
    return failures


def production_metric(task: Task, stored: registry.StoredModel, paths: TaskPaths) -> float:
    """The production model's primary metric on today's test split (not the number it was promoted with)."""
    device = resolve_device(task.cfg.train.device)
    model_task, model, _ = load_model(stored.model_file, device)
    rows = rows_of_split(paths.split_manifest, "test")
    _, values, _ = predict_rows(model_task, model, rows, paths, device, task.cfg.evaluate.batch_size)
    return metric_values(model_task.source, values)[0][task.goal.metric]


def serving_check(task: Task, stored: registry.StoredModel, paths: TaskPaths, evaluation: Path) -> dict[str, Any]:
    """Load the stored candidate as the service does and compare its answers with the offline predictions (the
    `predictions.jsonl` of its evaluation)."""
    offline = {row["sample_id"]: row["prediction"] for row in read_jsonl(evaluation / "predictions.jsonl")}
    rows = [r for r in rows_of_split(paths.split_manifest, "test") if r["sample_id"] in offline]
    sample = random.Random(0).sample(rows, min(task.cfg.promote.serving_check_samples, len(rows)))
    predictor = Predictor.from_store(stored, task.cfg.train.device)
    served = predictor.predict([predictor.task.codec.load_input(paths.raw / row["path"]) for row in sample])
    mismatches = []
    for row, answer in zip(sample, served, strict=True):
        expected = offline[row["sample_id"]]
        if not _same(answer, expected, task.cfg.promote.tolerance):
            mismatches.append({"sample_id": row["sample_id"], "served": answer, "offline": expected})
    return {
        "passed": not mismatches and len(sample) > 0,
        "checked": len(sample),
        "mismatches": mismatches[:5],
        "mismatch_count": len(mismatches),
    }


def _same(a: Any, b: Any, tolerance: float) -> bool:
    if isinstance(a, float) and isinstance(b, (int, float)):
        return abs(a - b) <= tolerance
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k], tolerance) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y, tolerance) for x, y in zip(a, b))
    return a == b


def provenance(paths: TaskPaths, imported: bool = False) -> dict[str, Any]:
    """DVC hashes of the data and model this candidate came from, and the git revision. An imported model was
    not made from this data: its model hash is unknown."""
    lock_file = paths.root / "dvc.lock"
    outs: dict[str, str] = {}
    if lock_file.exists():
        for stage in (yaml.safe_load(lock_file.read_text()) or {}).get("stages", {}).values():
            outs.update({o["path"]: o.get("md5", "") for o in stage.get("outs", [])})
    relative = {name: str(p.relative_to(paths.root)) for name, p in (("data", paths.raw), ("model", paths.model))}
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.root, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=paths.root, capture_output=True, text=True)
    return {
        "dvc_data_md5": outs.get(relative["data"]),
        "dvc_model_md5": None if imported else outs.get(relative["model"]),
        "git_revision": git.stdout.strip() or None,
        "git_dirty": bool(dirty.stdout.strip()) if git.returncode == 0 else None,
    }


def run(task: Task, paths: TaskPaths) -> dict[str, Any]:
    return promote(task, paths)


@dataclass(frozen=True)
class Judged:
    """The model a promotion judges: its file, its evaluation on the test split, and its store version if it is
    already stored (an imported candidate)."""

    model_file: Path
    evaluation: Path
    stored: registry.StoredModel | None = None


def candidate_version(task: Task, tag: str) -> registry.StoredModel:
    """The stored version `tag` (or `<task's model>:tag`) of the task's model, labeled candidate."""
    from bentoml.exceptions import NotFound

    name = registry.store_name(task.name)
    full = tag if ":" in tag else f"{name}:{tag}"
    if not full.startswith(f"{name}:"):
        raise ValueError(f"{tag} is not a version of the {task.name} model ({name}); see `lifecycle models`")
    try:
        stored = registry.get(full)
    except NotFound:
        raise LookupError(f"no stored model {full}; `lifecycle models --task {task.name}` lists them") from None
    if stored.stage != "candidate":
        raise ValueError(
            f"{full} is labeled {stored.stage or 'nothing'}: only a candidate can be promoted (import it again)"
        )
    return stored


def store_onnx(task: Task, stored: registry.StoredModel, paths: TaskPaths) -> tuple[str | None, str | None]:
    """Write the ONNX export (and its contract) into the stored version: (file name, None), or (None, why not)."""
    if not task.cfg.promote.export_onnx:
        return None, f"not exported as ONNX: {task.name}.promote.export_onnx is false"
    if "onnx" not in task.spec.capabilities:
        return None, f"not exported as ONNX: the {task.name} task has no ONNX export (`lifecycle tasks` lists them)"
    try:
        export(stored.model_file, paths, "onnx", stored.path / ONNX_FILE)
    except NotExportable as e:
        return None, f"not exported as ONNX: {e}"
    return ONNX_FILE, None


def promote(task: Task, paths: TaskPaths, candidate: str | None = None) -> dict[str, Any]:
    """Gate the trained model (models/<task>/model.pt, judged by the evaluate stage) or, with `candidate`, a stored
    candidate version (`lifecycle import`), evaluated here on the same test split; promote it if it passes."""
    if candidate is None:
        judged = Judged(paths.model, paths.reports("evaluate"))
    else:
        stored = candidate_version(task, candidate)
        judged = Judged(stored.model_file, paths.reports("promote") / "candidate", stored)
        evaluate(task, paths, judged.model_file, judged.evaluation)
    metrics = read_json(judged.evaluation / "metrics.json")
    if not metrics:
        raise FileNotFoundError(f"{judged.evaluation / 'metrics.json'}: run the evaluate stage first")
    primary = task.goal.metric
    candidate_metric = metrics[primary]
    decision = Decision(task.name, False, candidate={k: v for k, v in metrics.items() if isinstance(v, float)})
    decision.judged = str(judged.model_file if judged.stored is None else judged.stored.tag)
    decision.reasons += threshold_failures(task, metrics)

    current = registry.production(task.name)
    if current is not None:
        decision.production_before = current.tag
        try:
            decision.production_metric = production_metric(task, current, paths)
        except IncompatibleModel as e:  # this code cannot serve it either: the candidate answers the gates alone
            decision.notes.append(f"production model {current.tag} not re-measured: {e}")
            log.warning("%s", decision.notes[-1])
    if current is not None and decision.production_metric is not None:
        gain = task.goal.gain(candidate_metric, decision.production_metric)
        if gain < task.cfg.promote.min_delta or (gain == 0 and task.cfg.promote.min_delta == 0):
            decision.reasons.append(
                f"test {primary} {candidate_metric:.4f} does not beat production {current.tag} "
                f"({decision.production_metric:.4f} on the same test set) by the required {task.cfg.promote.min_delta}"
            )

    origin = provenance(paths, imported=judged.stored is not None)
    if not decision.reasons:
        stored = store_judged(task, judged, decision, origin)
        decision.stored_as = stored.tag
        decision.serving_check = serving_check(task, stored, paths, judged.evaluation)
        if decision.serving_check["passed"]:
            decision.onnx, why_not = store_onnx(task, stored, paths)
            decision.notes += [why_not] if why_not else []
            registry.make_production(task.name, stored.tag)
            decision.promoted = True
        else:
            registry.set_labels(stored.tag, **{registry.STAGE: "rejected"})
            decision.reasons.append(
                f"serving check failed: {decision.serving_check['mismatch_count']} of "
                f"{decision.serving_check['checked']} answers differ from offline evaluation"
            )
    elif judged.stored is not None:  # an imported candidate that failed its gate stays in the store, rejected
        decision.stored_as = registry.set_labels(judged.stored.tag, **{registry.STAGE: "rejected"}).tag
    decision.summary = summarize(decision, primary, candidate_metric)
    write_report(decision, paths.reports("promote"))
    write_model_card(task, paths, asdict(decision), origin, judged.evaluation, judged.model_file)
    rebuild_site(paths.root)
    return asdict(decision)


def store_judged(task: Task, judged: Judged, decision: Decision, origin: dict[str, Any]) -> registry.StoredModel:
    """The judged model as a store version with its test metrics, params, provenance and drift reference: a
    trained model is stored now; an imported candidate, already stored, gets them added."""
    # BentoML metadata takes no nulls: the params travel as JSON text, unknown provenance as "".
    trained = load_model(judged.model_file)[0].cfg  # the config (with tuned values) the model was made with
    info = {
        "metrics": decision.candidate,
        "params": json.dumps(trained.model_dump(mode="json", by_alias=True)),
        **{k: "" if v is None else v for k, v in origin.items()},
    }
    reference = judged.evaluation / REFERENCE
    extra = (reference,) if reference.exists() else ()
    if judged.stored is None:
        return registry.store_candidate(task.name, judged.model_file, info, extra)
    for path in extra:
        shutil.copyfile(path, judged.stored.path / path.name)
    return registry.set_metadata(judged.stored.tag, **info)


def summarize(decision: Decision, primary: str, candidate_metric: float) -> str:
    if not decision.promoted:
        return f"not promoted: {'; '.join(decision.reasons)}"
    if decision.production_before is None:
        return f"promoted {decision.stored_as} (test {primary} {candidate_metric:.4f}): first production model"
    if decision.production_metric is None:
        return (
            f"promoted {decision.stored_as} (test {primary} {candidate_metric:.4f}) over {decision.production_before}, "
            "which this code cannot load (see notes), now archived"
        )
    return (
        f"promoted {decision.stored_as}: test {primary} {candidate_metric:.4f} beats "
        f"{decision.production_before} ({decision.production_metric:.4f}), now archived"
    )


def write_report(decision: Decision, out_dir: Path) -> None:
    write_json(out_dir / "decision.json", asdict(decision))
    metrics = "\n".join(f"| {k} | {v:.4f} |" for k, v in decision.candidate.items())
    check = decision.serving_check
    lines = [
        f"# {decision.task}: {'PROMOTED' if decision.promoted else 'NOT PROMOTED'}",
        "",
        decision.summary,
        "",
        "| candidate test metric | value |",
        "|---|---|",
        metrics,
        "",
        f"Production before: {decision.production_before or 'none'}"
        + (
            f" (primary metric on this test set: {decision.production_metric:.4f})"
            if decision.production_metric is not None
            else ""
        ),
        f"Judged: {decision.judged}",
        f"Serving check: {'passed' if check.get('passed') else 'failed' if check else 'not run'}"
        + (f", {check['checked']} inputs, {check['mismatch_count']} mismatches" if check else ""),
        *([f"ONNX export stored in the version: {decision.onnx}"] if decision.onnx else []),
        *(f"Note: {note}" for note in decision.notes),
    ]
    write_text(out_dir / "decision.md", "\n".join(lines) + "\n")
