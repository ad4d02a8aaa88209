"""Batch inference with an existing model: every file under a folder goes through the task's own `decode` and
`prepare` and the same batched `Predictor.infer` as the service, and gets one output row with the same fields as
the HTTP answer. Unreadable inputs get a row with the reason instead; nothing is silently dropped."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifecycle import registry
from lifecycle.atomic import write_text
from lifecycle.samples import InvalidInput
from lifecycle.serving import Answer, Predictor

OUTPUT_FORMATS = (".jsonl", ".csv")


@dataclass
class BatchResult:
    model: str
    out: Path
    predicted: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)  # {"input": ..., "error": ...}


def production_or(task_name: str, tag: str | None) -> registry.StoredModel:
    """The stored model `tag`, or the task's production model when no tag is given."""
    if tag:
        return registry.get(tag)
    stored = registry.production(task_name)
    if stored is None:
        raise LookupError(f"no production model for task '{task_name}'; run the pipeline first or pass a model tag")
    return stored


def input_files(folder: Path) -> list[Path]:
    """Every non-hidden file under `folder`, in a stable order."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such input folder")
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise FileNotFoundError(f"{folder}: no input files")
    return files


def predict_folder(
    predictor: Predictor, folder: Path, out: Path, batch_size: int, progress: bool = True
) -> BatchResult:
    if out.suffix not in OUTPUT_FORMATS:
        raise ValueError(f"{out}: the output must end in {' or '.join(OUTPUT_FORMATS)}")
    from tqdm import tqdm

    files = input_files(folder)
    result = BatchResult(predictor.tag, out)
    rows: list[dict[str, Any]] = []
    with tqdm(total=len(files), desc=f"predict {predictor.task.name}", unit="input", disable=not progress) as bar:
        for path, outcome in answer_files(predictor, files, batch_size):
            name = str(path.relative_to(folder))
            if isinstance(outcome, Answer):
                rows.append({"input": name, **outcome.prediction, "model": predictor.tag})
                result.predicted += 1
            else:
                rows.append({"input": name, "error": outcome})
                result.failed.append({"input": name, "error": outcome})
            bar.update()
    write_text(out, _render(rows, out.suffix))
    return result


def answer_files(predictor: Predictor, files: Sequence[Path], batch_size: int) -> Iterator[tuple[Path, Answer | str]]:
    """Each file with its answer, or the reason it cannot be read, in order: decoded and prepared by the task and
    answered `batch_size` at a time by `Predictor.infer`, as the service does."""
    codec = predictor.task.codec
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        outcomes: list[Answer | str] = []
        prepared, slots = [], []
        for path in chunk:
            try:
                prepared.append(codec.prepare(codec.decode(path.read_bytes())))
                slots.append(len(outcomes))
                outcomes.append("")  # replaced by the answer below
            except (InvalidInput, OSError) as e:
                outcomes.append(str(e))
        for slot, answer in zip(slots, predictor.infer(prepared) if prepared else []):
            outcomes[slot] = answer
        yield from zip(chunk, outcomes)


def _render(rows: list[dict[str, Any]], suffix: str) -> str:
    if suffix == ".jsonl":
        return "".join(json.dumps(row) + "\n" for row in rows)
    columns = list(dict.fromkeys(["input", *(k for row in rows for k in row if k != "error"), "error"]))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    return buf.getvalue()


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (dict, list)) else value
