"""Data Docs of our own over Great Expectations validation results: an index with one row per validation and a
page per validation with one row per expectation. GX's own site draws its tables with bootstrap-table, jQuery and
vega from public CDNs, so offline it shows no validation at all; these pages are static HTML and need nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lifecycle.atomic import write_json, write_text
from lifecycle.html import esc, link, page, status, table

INDEX = "index.html"


def validation_file(name: str) -> str:
    return f"validations/{name}.html"


def write_data_docs(title: str, results: dict[str, dict[str, Any]], out: Path) -> Path:
    """Write `out`/index.html and one page (and the raw result JSON) per validation; `results` maps a validation's
    name to its result as GX serialises it (`ExpectationSuiteValidationResult.to_json_dict()`)."""
    for name, result in results.items():
        write_text(out / validation_file(name), validation_page(title, name, result))
        write_json(out / "validations" / f"{name}.json", result)
    write_text(out / INDEX, index_page(title, results))
    return out / INDEX


def index_page(title: str, results: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, result in results.items():
        stats = result.get("statistics", {})
        rows.append(
            [
                link(validation_file(name), name),
                status(bool(result.get("success"))),
                esc(stats.get("evaluated_expectations", "")),
                esc(stats.get("successful_expectations", "")),
                esc(stats.get("unsuccessful_expectations", "")),
                esc(_run_time(result)),
            ]
        )
    passed = all(r.get("success") for r in results.values())
    body = (
        f"<h1>{esc(title)}: data validation {status(passed)}</h1>\n"
        f"<p>{len(results)} validations by Great Expectations; each links its expectations.</p>\n"
        + table(["validation", "result", "expectations", "passed", "failed", "run at"], rows, "validations")
    )
    return page(f"{title}: Data Docs", body)


def validation_page(title: str, name: str, result: dict[str, Any]) -> str:
    rows = []
    for r in result.get("results", []):
        config, outcome = r.get("expectation_config") or {}, r.get("result") or {}
        kwargs = {k: v for k, v in (config.get("kwargs") or {}).items() if k not in ("column", "batch_id")}
        rows.append(
            [
                f"<code>{esc(config.get('type', '?'))}</code>",
                esc(config.get("kwargs", {}).get("column") or ""),
                esc(_short(kwargs)),
                status(bool(r.get("success"))),
                esc(_short(outcome.get("observed_value", ""))),
                esc(outcome.get("unexpected_count", "")),
                esc(_short((outcome.get("partial_unexpected_list") or [])[:5])),
            ]
        )
    body = (
        f"<p>{link('../' + INDEX, f'{title}: all validations')}</p>\n"
        f"<h1>{esc(name)}: {status(bool(result.get('success')))}</h1>\n"
        f"<p>Run at {esc(_run_time(result))}.</p>\n"
        + table(
            ["expectation", "column", "arguments", "result", "observed", "unexpected", "examples"],
            rows,
            "expectations",
        )
    )
    return page(f"{name}: validation", body)


def _run_time(result: dict[str, Any]) -> str:
    meta = result.get("meta") or {}
    return str((meta.get("run_id") or {}).get("run_time") or meta.get("validation_time") or "")


def _short(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
