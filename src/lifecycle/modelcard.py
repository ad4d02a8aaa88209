"""The model card: one page a person reads about a stored model. Written at promotion as
reports/<task>/promote/model_card.md and .html, and copied into the model's store version (so a Bento built from
the store carries it): what the model does and for which inputs, the data versions, the params it was trained with,
its test metrics overall and per group, its largest confusions or error examples, the promotion decision, the
serving contract and its known limits."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lifecycle import registry
from lifecycle.atomic import read_jsonl, write_text
from lifecycle.html import esc, page, table
from lifecycle.models import load_model
from lifecycle.operations import ServingConfig
from lifecycle.paths import TaskPaths
from lifecycle.reporting import class_columns, grouping_tables, read_json
from lifecycle.tasks import Task

CARD = "model_card"
EXAMPLES = 8


@dataclass
class Table:
    headers: Sequence[str]
    rows: list[list[str]]


@dataclass
class Code:
    text: str


Block = str | Table | Code  # a paragraph, a table, or preformatted text
Section = tuple[str, list[Block]]


def write_model_card(
    task: Task,
    paths: TaskPaths,
    decision: dict[str, Any],
    provenance: dict[str, Any],
    evaluation: Path | None = None,
    model_file: Path | None = None,
) -> Path:
    """Write the card of the candidate `decision` is about (evaluated in `evaluation`, by default the evaluate
    stage's reports of the trained model), and copy it into its store version if it was stored."""
    title = f"{task.name} model {decision.get('stored_as') or '(not stored)'}"
    sections = card_sections(task, paths, decision, provenance, evaluation, model_file)
    md, html = markdown(title, sections), page(f"Model card: {title}", html_body(title, sections))
    write_text(paths.model_card, md)
    write_text(paths.model_card.with_suffix(".html"), html)
    if decision.get("stored_as"):
        stored = registry.get(decision["stored_as"])
        write_text(stored.path / f"{CARD}.md", md)
        write_text(stored.path / f"{CARD}.html", html)
    return paths.model_card


def card_sections(
    task: Task,
    paths: TaskPaths,
    decision: dict[str, Any],
    provenance: dict[str, Any],
    evaluation: Path | None = None,
    model_file: Path | None = None,
) -> list[Section]:
    text = task.spec.card
    evaluate = evaluation or paths.reports("evaluate")
    metrics = read_json(evaluate / "metrics.json")
    split = read_json(paths.reports("split") / "summary.json")
    trained = load_model(model_file or paths.model)[0].cfg.model_dump(mode="json", by_alias=True)
    return [
        ("What it does", [text.does if text else "(no description registered for this task)"]),
        ("Inputs", [text.inputs if text else "(not described)"]),
        ("Data versions", data_versions(provenance, split)),
        ("Test metrics", [_table({k: v for k, v in metrics.items() if isinstance(v, float)}, "metric", "value")]),
        ("Test metrics per class", per_class_table(read_json(evaluate / "per_class.json"))),
        ("Test metrics per group", [Table(h, r) for h, r in grouping_tables(read_json(evaluate / "groups.json"))]),
        ("Largest confusions and error examples", errors(read_jsonl(evaluate / "predictions.jsonl"))),
        ("Promotion decision", promotion(decision)),
        ("Serving contract", serving_contract(task, serving_config(paths.root))),
        ("Known limits", list(text.known_limits) if text else ["(none recorded)"]),
        ("Params it was trained with", [Code(yaml.safe_dump(trained, sort_keys=False))]),
    ]


def data_versions(provenance: dict[str, Any], split: dict[str, Any]) -> list[Block]:
    facts = {
        "raw data (DVC md5)": provenance.get("dvc_data_md5") or "unknown (no dvc.lock entry)",
        "model file (DVC md5)": provenance.get("dvc_model_md5") or "unknown (no dvc.lock entry)",
        "git revision": f"{provenance.get('git_revision') or 'unknown'}"
        + (" (uncommitted changes)" if provenance.get("git_dirty") else ""),
    }
    blocks: list[Block] = [Table(["", "version"], [[k, str(v)] for k, v in facts.items()])]
    splits = [s for s in ("train", "val", "test") if s in split]
    groups = sorted({g for s in splits for g in (split.get("classes") or {}).get(s, {})})
    rows = [["all", *(str(split[s]) for s in splits)]]
    rows += [[g, *(str(split["classes"].get(s, {}).get(g, 0)) for s in splits)] for g in groups]
    blocks.append(Table(["samples", *splits], rows) if splits else "No split summary.")
    return blocks


def per_class_table(per_class: dict[str, Any]) -> list[Block]:
    metrics, classes = class_columns(per_class)
    if not classes:
        return ["This task reports no per-group metrics."]
    return [Table(["group", *metrics], [[c, *(_fmt(per_class[m].get(c)) for m in metrics)] for c in classes])]


def errors(predictions: list[dict[str, Any]]) -> list[Block]:
    """Confusions where the answer is a label or a text: the most frequent (truth, answer) pairs among the errors."""
    pairs: Counter[tuple[str, str]] = Counter()
    answered = 0
    for row in predictions:
        prediction, truth = row.get("prediction") or {}, row.get("truth")
        answer = prediction.get("label", prediction.get("text")) if isinstance(prediction, dict) else None
        if isinstance(truth, str) and isinstance(answer, str):
            answered += 1
            if answer != truth:
                pairs[(truth, answer)] += 1
    if not answered:
        return ["Answers are not single labels or texts (see the evaluation figures and per-group metrics)."]
    wrong = sum(pairs.values())
    rows = [[truth, answer, str(n)] for (truth, answer), n in pairs.most_common(EXAMPLES)]
    summary = f"{wrong} of {answered} test answers wrong; the most frequent:"
    return [summary, Table(["truth", "answer", "times"], rows)] if rows else ["No test answer was wrong."]


def promotion(decision: dict[str, Any]) -> list[Block]:
    check = decision.get("serving_check") or {}
    blocks: list[Block] = [str(decision.get("summary", ""))]
    blocks += [f"Stopped by: {r}" for r in decision.get("reasons", [])]
    if check:
        blocks.append(
            f"Serving check: {'passed' if check.get('passed') else 'failed'}, {check.get('checked')} "
            f"inputs answered as offline evaluation did except {check.get('mismatch_count')}."
        )
    blocks += [f"Note: {n}" for n in decision.get("notes", [])]
    return blocks


def serving_config(root: Path) -> ServingConfig:
    from lifecycle.params import load_params

    params = root / "params.yaml"
    return load_params(params, only=[]).serving if params.exists() else ServingConfig()


def serving_contract(task: Task, serving: ServingConfig) -> list[Block]:
    serve = task.cfg.serve
    rows = [
        ["endpoint", f"POST /{task.spec.endpoint}"],
        ["request", f"multipart/form-data, the input file in the field '{task.codec.input_field}'"],
        ["answer", "JSON: the prediction (as in predictions.jsonl) and the serving model's tag in 'model'"],
        ["largest file", f"{serving.max_upload_mb:g} MB (413 above)"],
        ["waiting limit", f"{serve.max_latency_ms} ms in the batching queue (503 above)"],
        ["batching", f"up to {serve.max_batch_size} concurrent requests per model call"],
        ["bad input", "4xx with a JSON 'error' saying what is wrong"],
    ]
    return [Table(["", ""], rows)]


def _table(values: dict[str, Any], key: str, value: str) -> Table:
    return Table([key, value], [[k, _fmt(v)] for k, v in values.items()])


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else json.dumps(value) if value is not None else "–"


def markdown(title: str, sections: list[Section]) -> str:
    lines = [f"# Model card: {title}", ""]
    for heading, blocks in sections:
        lines += [f"## {heading}", ""]
        for block in blocks:
            if isinstance(block, Table):
                lines += ["| " + " | ".join(block.headers) + " |", "|" + "---|" * len(block.headers)]
                lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in block.rows]
            elif isinstance(block, Code):
                lines += ["```yaml", block.text.rstrip(), "```"]
            else:
                lines.append(block)
            lines.append("")
    return "\n".join(lines)


def html_body(title: str, sections: list[Section]) -> str:
    parts = [f"<h1>Model card: {esc(title)}</h1>"]
    for heading, blocks in sections:
        parts.append(f"<h2>{esc(heading)}</h2>")
        for block in blocks:
            if isinstance(block, Table):
                parts.append(table(block.headers, ([esc(c) for c in row] for row in block.rows)))
            elif isinstance(block, Code):
                parts.append(f"<pre>{esc(block.text)}</pre>")
            else:
                parts.append(f"<p>{esc(block)}</p>")
    return "\n".join(parts)
