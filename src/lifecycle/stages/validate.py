"""Validate: a Great Expectations suite over the raw manifest. A failure stops the pipeline with the failing
expectations listed; the Data Docs HTML lands under reports/<task>/validate/data_docs either way."""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from lifecycle.atomic import atomic_dir, read_jsonl, write_json
from lifecycle.data import SPLITS
from lifecycle.paths import TaskPaths
from lifecycle.tasks.base import Task

REQUIRED_COLUMNS = ["sample_id", "path", "label", "source", "origin"]


class DataValidationError(RuntimeError):
    """The data failed its expectations."""


Checks = dict[str, tuple[pd.DataFrame, list[Any]]]  # table name -> (table, its expectations)


def checks(task: Task, paths: TaskPaths) -> Checks:
    """The generic tables and expectations (the manifest, its labels' classes, their balance, the collection
    summary) and the task's own (`Task.data_checks`)."""
    import great_expectations.expectations as gxe

    v = task.cfg.validation
    rows = read_jsonl(paths.raw_manifest)
    manifest = pd.DataFrame(rows)
    for column in REQUIRED_COLUMNS:
        if column not in manifest:
            manifest[column] = pd.Series(dtype=object)
    manifest["label"] = manifest["label"].map(repr)  # any JSON value, as text for the null/type checks
    occurrences = [c for row in rows for c in task.classes_of(row["label"])]
    counts = Counter(occurrences)
    classes = task.label_set() or sorted(counts)
    balance = pd.DataFrame(
        {"class": classes, "count": [counts.get(c, 0) for c in classes],
         "share": [counts.get(c, 0) / max(len(occurrences), 1) for c in classes]}
    )  # fmt: skip
    quarantined = len(read_jsonl(paths.quarantine))
    summary = pd.DataFrame(
        [{"samples": len(rows), "quarantined": quarantined,
          "quarantine_share": quarantined / max(len(rows) + quarantined, 1)}]
    )  # fmt: skip
    on_manifest = [
        gxe.ExpectTableColumnsToMatchSet(column_set=REQUIRED_COLUMNS, exact_match=False),
        gxe.ExpectColumnValuesToBeUnique(column="sample_id"),
        gxe.ExpectColumnValuesToMatchRegex(column="sample_id", regex=r"^[0-9a-f]{64}$"),
        *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("path", "label", "source")),
        *(gxe.ExpectColumnValuesToBeBetween(column=side, min_value=v.min_side, max_value=v.max_side)
          for side in ("width", "height") if side in manifest),
    ]  # fmt: skip
    if "source_split" in manifest:
        on_manifest.append(gxe.ExpectColumnValuesToBeInSet(column="source_split", value_set=list(SPLITS)))
    on_classes = [gxe.ExpectColumnValuesToBeInSet(column="class", value_set=task.label_set())] if task.label_set() else []
    return {
        "manifest": (manifest, on_manifest),
        "classes": (pd.DataFrame({"class": pd.Series(occurrences, dtype=object)}), on_classes),
        "balance": (balance, [gxe.ExpectColumnValuesToBeBetween(column="share", min_value=v.min_class_share)]),
        "summary": (summary, [
            gxe.ExpectColumnValuesToBeBetween(column="samples", min_value=v.min_samples),
            gxe.ExpectColumnValuesToBeBetween(column="quarantine_share", max_value=v.max_quarantine_share),
        ]),
        **task.data_checks(rows),
    }  # fmt: skip


def run_checkpoint(task: Task, tables: Checks, project_dir: Path) -> tuple[bool, list[dict], Path]:
    """Run every suite in one GX checkpoint; returns (success, failures, data docs folder)."""
    import great_expectations as gx

    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(project_dir))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas(task.name)
    definitions = {}
    for name, (_, expectations) in tables.items():
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        suite = context.suites.add(gx.ExpectationSuite(name=f"{task.name}.{name}"))
        for expectation in expectations:
            suite.add_expectation(expectation)
        definitions[name] = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{task.name}.{name}", data=batch, suite=suite)
        )
    failures: list[dict] = []
    success = True
    for name, definition in definitions.items():
        result = definition.run(batch_parameters={"dataframe": tables[name][0]}, result_format="SUMMARY")
        success &= bool(result.success)
        failures += [_failure(name, r) for r in result.results if not r.success]
    context.build_data_docs()
    return success, failures, project_dir / "gx" / "uncommitted" / "data_docs" / "local_site"


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


def validate(task: Task, paths: TaskPaths) -> dict[str, Any]:
    tables = checks(task, paths)
    report_dir = paths.reports("validate")
    with tempfile.TemporaryDirectory(prefix="gx-") as tmp:
        success, failures, docs = run_checkpoint(task, tables, Path(tmp))
        with atomic_dir(report_dir / "data_docs") as out:
            shutil.copytree(docs, out, dirs_exist_ok=True)
    result = {"success": success, "samples": len(tables["manifest"][0]), "failures": failures}
    write_json(report_dir / "result.json", result)
    if not success:
        listing = "\n".join(
            f"  - {f['table']}: {f['expectation']}" + (f" on '{f['column']}'" if f["column"] else "")
            + (f", observed {f['observed']}" if f["observed"] is not None else "")
            + (f", {f['unexpected_count']} unexpected, e.g. {f['unexpected_examples']}" if f["unexpected_count"] else "")
            for f in failures
        )  # fmt: skip
        raise DataValidationError(
            f"{task.name}: data validation failed ({len(failures)} expectation(s)); "
            f"see {report_dir / 'data_docs' / 'index.html'}\n{listing}"
        )
    return result
