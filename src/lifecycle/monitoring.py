"""Drift monitoring. Each model is promoted with its reference (the test split's descriptors, predictions and
embeddings, from the evaluate stage); `monitor` compares the request-log window of that model with it in an
Evidently report and decides: drift (which columns, the share of each group) or not, or "not enough data".

Windows larger than `monitoring.max_rows` are sampled uniformly (seeded reservoir sampling, while the lines are read,
before any JSON is parsed). The drift tests compare distributions, and a uniform sample of 20,000 rows estimates them
within a fraction of the tests' thresholds (the standard error of an empirical CDF at n = 20,000 is under 0.004), so
a million-row window costs the time to read its lines, and memory for 20,000 of them.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifecycle import registry
from lifecycle.atomic import atomic_path, write_json, write_text
from lifecycle.capture import capture_stats
from lifecycle.config import ConfigError
from lifecycle.models import load_task
from lifecycle.operations import MonitoringConfig
from lifecycle.paths import TaskPaths
from lifecycle.reporting import read_json
from lifecycle.serving import Predictor
from lifecycle.tasks.parts import Monitoring

if TYPE_CHECKING:
    import pandas as pd

REFERENCE = "reference.parquet"
_TIMESTAMP = re.compile(r'^\{"timestamp":"([^"]+)"')
_MODEL = re.compile(r'"model":"([^"]+)"')


def columns(
    monitoring: Monitoring, descriptors: dict[str, float], prediction: dict[str, Any], embedding: list[float]
) -> dict[str, Any]:
    """One monitored row, its columns named by group: `input.<descriptor>`, `prediction.<column>`, `embedding.<i>`."""
    return {
        **{f"input.{k}": v for k, v in descriptors.items()},
        **{f"prediction.{k}": v for k, v in monitoring.monitored(prediction).items()},
        **{f"embedding.{i}": v for i, v in enumerate(embedding)},
    }


GROUP_OF_PREFIX = {"input": "descriptors", "prediction": "prediction", "embedding": "embedding"}
GROUPS = tuple(GROUP_OF_PREFIX.values())  # thresholds per group: monitoring.drift_share


def build_reference(predictor: Predictor, inputs: list[Any], batch_size: int) -> pd.DataFrame:
    """The monitored rows of decoded inputs (the test split), answered by `predictor` as the service would."""
    import pandas as pd

    codec, monitoring, rows = predictor.task.codec, predictor.task.monitoring, []
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start : start + batch_size]
        answers = predictor.infer([codec.prepare(x) for x in chunk])
        described = monitoring.descriptors(chunk)  # as the service describes its batches, but failing loudly
        rows += [columns(monitoring, d, a.prediction, a.embedding) for d, a in zip(described, answers, strict=True)]
    return pd.DataFrame.from_records(rows)


def write_reference(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_test_reference(predictor: Predictor, paths: TaskPaths, batch_size: int, target: Path) -> None:
    """The reference of `predictor`'s model: the task's test split as that model answers it."""
    from lifecycle.data import rows_of_split

    rows = rows_of_split(paths.split_manifest, "test")
    inputs = [predictor.task.codec.load_input(paths.raw / row["path"]) for row in rows]
    write_reference(build_reference(predictor, inputs, batch_size), target)


@dataclass
class Decision:
    task: str
    model: str
    status: str  # "drift", "no drift" or "not enough data"
    drift: bool
    timestamp: str
    rows: int  # logged requests of this model in the window
    compared: int  # rows the report compared (the window, sampled to max_rows)
    since: str | None
    until: str | None
    drifted_columns: dict[str, list[str]] = field(default_factory=dict)  # group -> drifted columns
    shares: dict[str, float] = field(default_factory=dict)  # group -> share of its columns drifted
    thresholds: dict[str, float] = field(default_factory=dict)
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # column -> method, score, drifted
    reason: str = ""
    report_html: str | None = None
    report_json: str | None = None
    captured: dict[str, Any] = field(default_factory=dict)  # the capture folder: files, mb, dropped by its bound


@dataclass
class Window:
    sample: list[str]  # raw log lines, a uniform sample of at most max_rows of the window
    rows: int  # lines in the window
    until: str | None  # the newest timestamp in it


def read_window(log_dir: Path, task: str, model: str, since: str | None, last_n: int | None, max_rows: int) -> Window:
    """`model`'s logged requests after `since` (or its last `last_n`), sampled uniformly to `max_rows` while reading
    (reservoir sampling), so memory stays bounded by `max_rows` lines whatever the window's size."""
    from lifecycle.requestlog import log_files

    rng = random.Random(0)
    stamped: list[tuple[str, str]] = []  # last_n only: the newest need sorting by time
    reservoir: list[str] = []
    rows, until = 0, None
    for path in log_files(log_dir, task):
        with path.open(encoding="utf-8") as f:
            for line in f:
                stamp, tag = _TIMESTAMP.match(line), _MODEL.search(line)
                if not (stamp and tag and tag.group(1) == model and (since is None or stamp.group(1) > since)):
                    continue
                if last_n:
                    stamped.append((stamp.group(1), line))
                    continue
                until = max(until or "", stamp.group(1))
                if rows < max_rows:
                    reservoir.append(line)
                elif (slot := rng.randrange(rows + 1)) < max_rows:
                    reservoir[slot] = line
                rows += 1
    if last_n:
        newest = sorted(stamped)[-last_n:]
        lines = [line for _, line in newest]
        return Window(
            rng.sample(lines, max_rows) if len(lines) > max_rows else lines,
            len(lines),
            newest[-1][0] if newest else None,
        )
    return Window(reservoir, rows, until)


def current_frame(monitoring: Monitoring, lines: list[str]) -> pd.DataFrame:
    import pandas as pd

    rows = []
    for line in lines:
        try:
            record = json.loads(line)
            rows.append(columns(monitoring, record["descriptors"], record["prediction"], record["embedding"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by a crash mid-write
    return pd.DataFrame.from_records(rows)


def monitor_task(task_name: str, params_path: Path, root: Path) -> dict[str, Any]:
    """`monitor` with the project's params: the request log of `serving.log_dir`, reports in reports/drift/<task>/."""
    from lifecycle.params import load_params

    params = load_params(params_path, only=[task_name])
    stored = registry.production(task_name)
    if stored is not None and not (stored.path / REFERENCE).exists():
        # promoted before references existed: compute it now from the current test split, and keep it with the model
        section = params.task(task_name)
        write_test_reference(
            Predictor.from_store(stored, section.serve.device),
            TaskPaths(root, task_name),
            section.evaluate.batch_size,
            stored.path / REFERENCE,
        )
    log_dir = params.serving.log_dir if params.serving.log_dir.is_absolute() else root / params.serving.log_dir
    captures = root / params.monitoring.capture_dir / task_name  # an absolute capture_dir stays as it is
    return monitor(task_name, params.monitoring, log_dir, root / "reports" / "drift" / task_name, captures)


def monitor(
    task_name: str, cfg: MonitoringConfig, log_dir: Path, out_dir: Path, capture_dir: Path | None = None
) -> dict[str, Any]:
    """Compare the production model's request-log window with its reference; write the report and decision under
    `out_dir` (`<timestamp>.html`, `.json`, `.decision.json`) and return the decision, with what the capture folder
    holds and how many captures its bound dropped."""
    stored = registry.production(task_name)
    if stored is None:
        raise LookupError(f"no production model for task '{task_name}': nothing is served, so nothing to monitor")
    reference_file = stored.path / REFERENCE
    if not reference_file.exists():
        raise FileNotFoundError(
            f"{stored.tag} was promoted without a drift reference ({reference_file}); "
            "promote a model evaluated by this version of the pipeline"
        )
    task = load_task(stored.model_file)
    state_file = out_dir / "state.json"
    since = None if cfg.last_n else read_json(state_file).get(stored.tag)
    window = read_window(log_dir, task_name, stored.tag, since, cfg.last_n, cfg.max_rows)
    now = datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    decision = Decision(
        task_name,
        stored.tag,
        "not enough data",
        False,
        now.isoformat(),
        window.rows,
        0,
        since,
        window.until,
        thresholds=cfg.drift_share.model_dump(),
        captured=capture_stats(capture_dir) if capture_dir is not None else {},
    )
    if window.rows < cfg.min_rows:
        decision.reason = f"{window.rows} logged requests since {since or 'the start'}; at least {cfg.min_rows} needed"
        write_json(out_dir / f"{stamp}.decision.json", asdict(decision))
        return asdict(decision)

    import pandas as pd

    reference = pd.read_parquet(reference_file)
    if len(reference) > cfg.max_rows:
        reference = reference.sample(cfg.max_rows, random_state=0)
    current = current_frame(task.monitoring, window.sample)
    decision.compared = len(current)
    scores = drift_scores(reference, current, cfg, out_dir / f"{stamp}.html", out_dir / f"{stamp}.json")
    decide(decision, scores, cfg)
    decision.report_html, decision.report_json = f"{stamp}.html", f"{stamp}.json"
    write_json(out_dir / f"{stamp}.decision.json", asdict(decision))
    write_json(state_file, {**read_json(state_file), stored.tag: window.until})
    return asdict(decision)


def drift_scores(
    reference: pd.DataFrame, current: pd.DataFrame, cfg: MonitoringConfig, html: Path, json_path: Path
) -> dict[str, dict[str, Any]]:
    """Evidently's per-column drift tests over the columns both frames have; saves the report as HTML and JSON."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    shared = [c for c in reference.columns if c in current.columns]
    categorical = [c for c in shared if reference[c].dtype == object]
    numerical = [c for c in shared if c not in categorical]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    preset = DataDriftPreset(
        columns=shared,
        num_method=cfg.num_method,
        num_threshold=cfg.num_threshold,
        cat_method=cfg.cat_method,
        cat_threshold=cfg.cat_threshold,
    )
    import numpy as np
    from evidently.legacy.calculations.stattests.registry import StatTestNotFoundError

    try:
        with np.errstate(divide="ignore", invalid="ignore"):  # constant columns (e.g. a fixed image size) divide by 0
            snapshot = Report([preset], include_tests=True).run(
                current_data=Dataset.from_pandas(current[shared], data_definition=definition),
                reference_data=Dataset.from_pandas(reference[shared], data_definition=definition),
            )
    except StatTestNotFoundError as e:
        raise ConfigError(f"monitoring.num_method / monitoring.cat_method: {e}") from None
    with atomic_path(html) as tmp:
        snapshot.save_html(str(tmp))
    result = snapshot.dict()
    write_text(json_path, json.dumps(result, default=str, indent=1))
    scores: dict[str, dict[str, Any]] = {}
    for metric in result["metrics"]:
        config = metric["config"]
        if config.get("type", "").endswith("ValueDrift"):
            scores[config["column"]] = {"method": config.get("method"), "score": float(metric["value"])}
    for test in result["tests"]:
        column = test["metric_config"]["params"].get("column")
        if column in scores:
            scores[column]["drifted"] = test["status"] == "FAIL"
            scores[column]["threshold"] = test["metric_config"]["params"].get("threshold")
    return scores


def decide(decision: Decision, scores: dict[str, dict[str, Any]], cfg: MonitoringConfig) -> None:
    """Drift when, in any group, the share of drifted columns reaches the group's threshold."""
    decision.scores = scores
    thresholds = cfg.drift_share.model_dump()
    reasons = []
    for group in GROUPS:
        in_group = [c for c in scores if GROUP_OF_PREFIX[c.split(".", 1)[0]] == group]
        drifted = [c for c in in_group if scores[c].get("drifted")]
        decision.drifted_columns[group] = drifted
        decision.shares[group] = len(drifted) / len(in_group) if in_group else 0.0
        if in_group and decision.shares[group] >= thresholds[group]:
            reasons.append(f"{group} drifted ({len(drifted)} of {len(in_group)}: {', '.join(drifted)})")
    decision.drift = bool(reasons)
    decision.status = "drift" if decision.drift else "no drift"
    decision.reason = "; ".join(reasons) or (
        f"no group reached its drift share ({', '.join(f'{g} {decision.shares[g]:.2f}' for g in GROUPS)})"
    )


def markdown(decision: dict[str, Any]) -> str:
    """The decision for people: the Prefect artifact and the report index."""
    lines = [
        f"# {decision['task']}: {decision['status'].upper()}",
        "",
        decision["reason"],
        "",
        f"Model `{decision['model']}`, {decision['rows']} logged requests from {decision['since'] or 'the start'} "
        f"to {decision['until'] or '-'}; {decision['compared']} compared with the reference.",
    ]
    if decision["scores"]:
        lines += ["", "| column | test | score | drifted |", "|---|---|---|---|"]
        lines += [
            f"| {c} | {s.get('method')} | {s['score']:.4g} | {'yes' if s.get('drifted') else ''} |"
            for c, s in decision["scores"].items()
        ]
    if decision.get("report_html"):
        lines += ["", f"Report: `{decision['report_html']}`"]
    return "\n".join(lines) + "\n"
