"""Validate: a Great Expectations suite over the raw manifest. A failure stops the pipeline with the failing
expectations listed; the Data Docs (our own static pages over GX's results, see lifecycle.datadocs) land under
reports/<task>/validate/data_docs either way."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from lifecycle.atomic import atomic_dir, read_jsonl, write_json
from lifecycle.config import ValidateConfig
from lifecycle.datadocs import write_data_docs
from lifecycle.paths import TaskPaths
from lifecycle.splitting import SPLITS
from lifecycle.tasks import Task
from lifecycle.tasks.parts import Checks, Source

REQUIRED_COLUMNS = ["sample_id", "path", "label", "source", "origin"]


class DataValidationError(RuntimeError):
    """The data failed its expectations."""


def checks(source: Source, v: ValidateConfig, paths: TaskPaths) -> Checks:
    """The generic tables and expectations (the manifest, its labels' classes, their balance, the collection
    summary) and the task's own (`Source.data_checks`)."""
    import great_expectations.expectations as gxe

    rows = read_jsonl(paths.raw_manifest)
    manifest = pd.DataFrame(rows)
    for column in REQUIRED_COLUMNS:
        if column not in manifest:
            manifest[column] = pd.Series(dtype=object)
    manifest["label"] = manifest["label"].map(repr)  # any JSON value, as text for the null/type checks
    occurrences = [c for row in rows for c in source.classes_of(row["label"])]
    counts = Counter(occurrences)
    classes = source.label_set() or sorted(counts)
    balance = pd.DataFrame(
        {
            "class": classes,
            "count": [counts.get(c, 0) for c in classes],
            "share": [counts.get(c, 0) / max(len(occurrences), 1) for c in classes],
        }
    )
    quarantined = len(read_jsonl(paths.quarantine))
    summary = pd.DataFrame(
        [
            {
                "samples": len(rows),
                "quarantined": quarantined,
                "quarantine_share": quarantined / max(len(rows) + quarantined, 1),
            }
        ]
    )
    on_manifest = [
        gxe.ExpectTableColumnsToMatchSet(column_set=REQUIRED_COLUMNS, exact_match=False),
        gxe.ExpectColumnValuesToBeUnique(column="sample_id"),
        gxe.ExpectColumnValuesToMatchRegex(column="sample_id", regex=r"^[0-9a-f]{64}$"),
        *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("path", "label", "source")),
        *(
            gxe.ExpectColumnValuesToBeBetween(column=side, min_value=v.min_side, max_value=v.max_side)
            for side in ("width", "height")
            if side in manifest
        ),
    ]
    if "source_split" in manifest:
        on_manifest.append(gxe.ExpectColumnValuesToBeInSet(column="source_split", value_set=list(SPLITS)))
    label_set = source.label_set()
    on_classes = [gxe.ExpectColumnValuesToBeInSet(column="class", value_set=label_set)] if label_set else []
    return {
        "manifest": (manifest, on_manifest),
        "classes": (pd.DataFrame({"class": pd.Series(occurrences, dtype=object)}), on_classes),
        "balance": (balance, [gxe.ExpectColumnValuesToBeBetween(column="share", min_value=v.min_class_share)]),
        "summary": (
            summary,
            [
                gxe.ExpectColumnValuesToBeBetween(column="samples", min_value=v.min_samples),
                gxe.ExpectColumnValuesToBeBetween(column="quarantine_share", max_value=v.max_quarantine_share),
            ],
        ),
        **source.data_checks(rows),
    }


def run_checkpoint(
    name: str, tables: Checks, project_dir: Path
) -> tuple[bool, list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Run every suite in one GX context; returns (success, failures, each table's result as GX serialises it)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(project_dir))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    datasource = context.data_sources.add_pandas(name)
    definitions = {}
    for table, (_, expectations) in tables.items():
        batch = datasource.add_dataframe_asset(table).add_batch_definition_whole_dataframe(table)
        suite = context.suites.add(gx.ExpectationSuite(name=f"{name}.{table}"))
        for expectation in expectations:
            suite.add_expectation(expectation)
        definitions[table] = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{name}.{table}", data=batch, suite=suite)
        )
    failures: list[dict[str, Any]] = []
    results: dict[str, dict[str, Any]] = {}
    success = True
    for table, definition in definitions.items():
        result = definition.run(batch_parameters={"dataframe": tables[table][0]}, result_format="SUMMARY")
        success &= bool(result.success)
        failures += [_failure(table, r) for r in result.results if not r.success]
        results[table] = result.to_json_dict()
    return success, failures, results


def _failure(table: str, r: Any) -> dict[str, Any]:
    config = r.expectation_config
    result = r.result or {}
    return {
        "table": table,
        "expectation": config.type,
        "column": config.kwargs.get("column"),
        "observed": result.get("observed_value"),
        "unexpected_count": result.get("unexpected_count"),
        "unexpected_examples": [str(x) for x in (result.get("partial_unexpected_list") or [])[:5]],
    }


def run(task: Task, paths: TaskPaths) -> dict[str, Any]:
    return validate(task.source, task.cfg.validation, paths)


def validate(source: Source, cfg: ValidateConfig, paths: TaskPaths) -> dict[str, Any]:
    tables = checks(source, cfg, paths)
    report_dir = paths.reports("validate")
    with tempfile.TemporaryDirectory(prefix="gx-") as tmp:
        success, failures, results = run_checkpoint(paths.task, tables, Path(tmp))
    with atomic_dir(report_dir / "data_docs") as out:
        write_data_docs(paths.task, results, out)
    result = {"success": success, "samples": len(tables["manifest"][0]), "failures": failures}
    write_json(report_dir / "result.json", result)
    if not success:
        listing = "\n".join(
            f"  - {f['table']}: {f['expectation']}"
            + (f" on '{f['column']}'" if f["column"] else "")
            + (f", observed {f['observed']}" if f["observed"] is not None else "")
            + (
                f", {f['unexpected_count']} unexpected, e.g. {f['unexpected_examples']}"
                if f["unexpected_count"]
                else ""
            )
            for f in failures
        )
        raise DataValidationError(
            f"{paths.task}: data validation failed ({len(failures)} expectation(s)); "
            f"see {report_dir / 'data_docs' / 'index.html'}\n{listing}"
        )
    return result
