"""The report site: reports/index.html, one section per task linking everything a person reviews (the latest run's
metrics against the production model's, per-group metrics, pictures, training curves, tuning figures, Data Docs,
the promotion decision, the model card and the drift history with each monitor run's Evidently report).

Rebuilt from the files on disk at the end of every lifecycle run, monitor run and promotion, and by
`lifecycle report`. It is not a DVC output (nothing in dvc.yaml names it), so rebuilding it leaves `dvc status`
clean. Static HTML with inline SVG charts: it opens offline."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from lifecycle import registry
from lifecycle.atomic import write_text
from lifecycle.config import ConfigError
from lifecycle.html import Point, esc, line_chart, link, page, status, table
from lifecycle.paths import TaskPaths, report_site
from lifecycle.reporting import class_columns, grouping_tables, read_json, tuning_line

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg")


def build_site(root: Path, tasks: list[str]) -> Path:
    """Write reports/index.html for `tasks` (missing reports are said to be missing) and return its path."""
    index = report_site(root)
    sections = "\n".join(task_section(TaskPaths(root, name), index.parent) for name in tasks)
    contents = " · ".join(f"<a href='#{esc(name)}'>{esc(name)}</a>" for name in tasks)
    body = f"<h1>Reports</h1>\n<p>Built {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}. {contents}</p>\n{sections}"
    write_text(index, page("lifecycle reports", body))
    return index


def pages(paths: TaskPaths) -> dict[str, Path]:
    """The HTML pages of one task that exist, by name (for the flows' Prefect artifacts)."""
    drift = sorted(paths.drift_reports.glob("*.html"))
    found = {
        "report site": report_site(paths.root),
        "data docs": paths.reports("validate") / "data_docs" / "index.html",
        "model card": paths.model_card.with_suffix(".html"),
        **({"latest drift report": drift[-1]} if drift else {}),
    }
    return {name: path for name, path in found.items() if path.exists()}


def task_section(paths: TaskPaths, base: Path) -> str:
    def href(path: Path) -> str:
        return path.relative_to(base).as_posix()

    def linked(path: Path, text: str) -> str:
        return link(href(path), text) if path.exists() else f"{esc(text)} (not yet written)"

    decision = read_json(paths.reports("promote") / "decision.json")
    validation = read_json(paths.reports("validate") / "result.json")
    data_docs = paths.reports("validate") / "data_docs" / "index.html"
    card = paths.model_card.with_suffix(".html")
    parts = [
        f"<h2 id='{esc(paths.task)}'>{esc(paths.task)}</h2>",
        "<ul>",
        f"<li>Data validation: {status(bool(validation.get('success'))) if validation else 'not run'}, "
        f"{linked(data_docs, 'Data Docs')}</li>",
        f"<li>Promotion: {esc(decision.get('summary', 'none yet'))} "
        f"({linked(paths.reports('promote') / 'decision.md', 'decision')})</li>",
        f"<li>{linked(card, 'Model card')} of the promoted model</li>",
        "</ul>",
        "<h3>Test metrics: latest run and production model</h3>",
        metrics_table(paths),
        "<h3>Per-group test metrics</h3>",
        per_class_table(read_json(paths.reports("evaluate") / "per_class.json")),
        *(
            table(headers, [[esc(cell) for cell in row] for row in rows], "per-group")
            for headers, rows in grouping_tables(read_json(paths.reports("evaluate") / "groups.json"))
        ),
        "<h3>Pictures</h3>",
        pictures(
            [paths.reports("train") / "augmented.png", *sorted(paths.reports("evaluate").glob("figures/*"))], href
        ),
        "<h3>Training curves</h3>",
        training_curves(paths.reports("train") / "live" / "plots" / "metrics"),
        "<h3>Tuning</h3>",
        f"<p>{esc(tuning_line(read_json(paths.reports('tune') / 'summary.json'), _primary(paths)))}</p>",
        pictures(sorted(paths.reports("tune").glob("figures/*")), href),
        "<h3>Drift history</h3>",
        drift_history(paths.drift_reports, href),
    ]
    return "\n".join(parts)


def _primary(paths: TaskPaths) -> str:
    return str(read_json(paths.reports("evaluate") / "metrics.json").get("primary_metric", ""))


def metrics_table(paths: TaskPaths) -> str:
    latest = {k: v for k, v in read_json(paths.reports("evaluate") / "metrics.json").items() if _number(v)}
    stored = registry.production(paths.task)
    production = stored.metadata.get("metrics", {}) if stored else {}
    if not latest and not production:
        return "<p>No evaluation yet.</p>"
    names = list(latest) + [k for k in production if k not in latest]
    rows = [[esc(k), _fmt(latest.get(k)), _fmt(production.get(k))] for k in names]
    model = f"production {stored.tag}" if stored else "production (none)"
    return table(["metric", "latest run", model], rows, "metrics")


def per_class_table(per_class: dict[str, Any]) -> str:
    metrics, classes = class_columns(per_class)
    if not classes:
        return "<p>No per-group metrics for this task.</p>"
    rows = [[esc(c), *(_fmt(per_class[m].get(c)) for m in metrics)] for c in classes]
    return table(["group", *metrics], rows, "per-group")


def pictures(files: list[Path], href: Any) -> str:
    shown = [f for f in files if f.suffix.lower() in PICTURE_SUFFIXES and f.exists()]
    others = [f for f in files if f.suffix.lower() not in PICTURE_SUFFIXES and f.is_file()]
    figures = "".join(
        f"<figure><a href='{esc(href(f))}'><img src='{esc(href(f))}' alt='{esc(f.stem)}' width='320'></a>"
        f"<figcaption>{esc(f.name)}</figcaption></figure>"
        for f in shown
    )
    listed = " · ".join(link(href(f), f.name) for f in others)
    return (figures + (f"<p>{listed}</p>" if listed else "")) or "<p>None yet.</p>"


def training_curves(metrics_dir: Path) -> str:
    """DVCLive's per-epoch TSV files (`<split>/<metric>.tsv`, columns step and the value), one chart per metric."""
    charts: dict[str, dict[str, list[Point]]] = {}
    for tsv in sorted(metrics_dir.rglob("*.tsv")):
        with tsv.open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        series = tsv.relative_to(metrics_dir).parent.as_posix()
        name = tsv.stem
        points: list[Point] = [(float(r["step"]) + 1, float(r[name]), None) for r in rows if _number(r.get(name))]
        charts.setdefault(name, {})[series if series != "." else name] = points
    return "".join(line_chart(name, series, "epoch") for name, series in charts.items()) or "<p>None yet.</p>"


def drift_history(drift_dir: Path, href: Any) -> str:
    """One point per monitor run and group: the share of the group's columns that drifted, linking the run's
    Evidently report; and the runs as a table."""
    runs = [read_json(p) for p in sorted(drift_dir.glob("*.decision.json"))]
    if not runs:
        return "<p>No monitor run yet.</p>"
    groups = list(dict.fromkeys(g for run in runs for g in run.get("shares", {})))
    series: dict[str, list[Point]] = {g: [] for g in groups}
    rows = []
    for i, run in enumerate(runs, start=1):
        report = drift_dir / run["report_html"] if run.get("report_html") else None
        target = href(report) if report and report.exists() else None
        for g in groups:
            if g in run.get("shares", {}):
                series[g].append((i, float(run["shares"][g]), target))
        rows.append(
            [
                esc(i),
                esc(run.get("timestamp", "")),
                esc(run.get("model", "")),
                esc(run.get("status", "")),
                esc(run.get("rows", "")),
                *(_fmt(run.get("shares", {}).get(g)) for g in groups),
                link(target, "Evidently report") if target else "",
            ]
        )
    chart = line_chart("share of each group's columns drifted, per monitor run", series, "monitor run")
    headers = ["run", "time", "model", "status", "requests", *(f"{g} drifted" for g in groups), "report"]
    return chart + table(headers, rows, "drift-runs")


def _number(value: Any) -> bool:
    try:
        return value is not None and not isinstance(value, bool) and float(value) == float(value)
    except (TypeError, ValueError):
        return False


def _fmt(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{float(value):.4f}" if _number(value) else "–"


def site_tasks(root: Path) -> list[str]:
    """The tasks params.yaml lists (read as plain YAML: the names are all the site needs, and validating the params
    would import every task's code), else those with reports on disk."""
    params = root / "params.yaml"
    if params.exists():
        tasks = (yaml.safe_load(params.read_text(encoding="utf-8")) or {}).get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
            raise ConfigError(f"{params}: tasks: expected a list of task names, got {tasks!r}")
        return tasks
    skip = {"drift", "labeling"}
    return sorted(p.name for p in (root / "reports").iterdir() if p.is_dir() and p.name not in skip)


def rebuild(root: Path) -> Path:
    """`build_site` for the project's tasks."""
    return build_site(root, site_tasks(root))
