"""Human-readable summaries of a task's latest run, for the flow's artifact and the terminal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lifecycle.paths import TaskPaths, report_site


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def run_summary(paths: TaskPaths) -> dict[str, Any]:
    """Test metrics, training facts and where each report is."""
    return {
        "task": paths.task,
        "test": read_json(paths.reports("evaluate") / "metrics.json"),
        "train": read_json(paths.reports("train") / "summary.json"),
        "data": read_json(paths.reports("split") / "summary.json"),
        "tuning": read_json(paths.reports("tune") / "summary.json"),
        "promotion": read_json(paths.reports("promote") / "decision.json"),
        "reports": {
            "report_site": report_site(paths.root),
            "data_docs": paths.reports("validate") / "data_docs" / "index.html",
            "tuning_figures": paths.reports("tune") / "figures",
            "augmented_samples": paths.reports("train") / "augmented.png",
            "training_curves": paths.reports("train") / "live" / "plots" / "metrics",
            "evaluation_figures": paths.reports("evaluate") / "figures",
            "model": paths.model,
            "promotion_decision": paths.reports("promote") / "decision.md",
            "model_card": paths.model_card.with_suffix(".html"),
        },
    }


def summary_markdown(summary: dict[str, Any]) -> str:
    test, train, data = summary["test"], summary["train"], summary["data"]
    primary = test.get("primary_metric", "")
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in test.items() if isinstance(v, float))
    links = "\n".join(f"- {name.replace('_', ' ')}: `{path}`" for name, path in summary["reports"].items())
    return (
        f"# {summary['task']}: test {primary} {test.get(primary, float('nan')):.4f}\n\n"
        f"| test metric | value |\n|---|---|\n{rows}\n\n"
        f"Data: {data.get('train', '?')} train / {data.get('val', '?')} val / {data.get('test', '?')} test samples. "
        f"Training: {train.get('epochs_run', '?')} epochs on {train.get('device', '?')} ({train.get('precision', '?')}), "
        f"best epoch {train.get('best_epoch', '?')}, {train.get('samples_per_second', 0):.0f} samples/s.\n\n"
        f"Tuning: {tuning_line(summary['tuning'], primary)}\n\n"
        f"Last promotion decision: {summary['promotion'].get('summary', 'none yet')}\n\n"
        f"Reports:\n{links}\n"
    )


def tuning_line(tuning: dict[str, Any], primary: str) -> str:
    if not tuning.get("enabled"):
        return f"off ({tuning.get('reason', 'not run')})"
    return (
        f"{tuning['trials']} trials ({tuning['complete']} complete, {tuning['pruned']} pruned, {tuning['fail']} failed), "
        f"{tuning.get('epochs_run', '?')} epochs in all, up to {tuning.get('max_epochs', '?')} each, in "
        f"{tuning['seconds']:.0f} s; trained with {tuning.get('reason', tuning.get('best_params'))}"
    )


def class_columns(per_class: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The evaluate stage's per-class metrics as (metric names, class names): the columns and rows of its table."""
    metrics = [m for m, by_class in per_class.items() if isinstance(by_class, dict)]
    return metrics, list(dict.fromkeys(c for m in metrics for c in per_class[m]))


def grouping_tables(groups: dict[str, Any]) -> list[tuple[list[str], list[list[str]]]]:
    """The evaluate stage's per-group test metrics as one (headers, rows) table per grouping."""
    tables = []
    for grouping, by_group in groups.items():
        facts = ("samples", "seen_in_training")
        metrics = list(dict.fromkeys(m for values in by_group.values() for m in values if m not in facts))
        rows = [
            [group, str(v["samples"]), "yes" if v["seen_in_training"] else "no", *(f"{v[m]:.4f}" for m in metrics)]
            for group, v in by_group.items()
        ]
        tables.append(([grouping, "samples", "seen in training", *metrics], rows))
    return tables
