"""Split: assign train/val/test from a hash of each sample's split unit (its content hash, or its group),
so adding data never moves an existing sample to another split. Reviewed production inputs (group `captured`)
are split by content hash and counted as a group of their own in the summary."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from lifecycle.atomic import read_jsonl, write_json, write_jsonl
from lifecycle.config import SplitConfig
from lifecycle.paths import TaskPaths
from lifecycle.splitting import CAPTURED, SPLITS, split_key, split_of
from lifecycle.tasks import Task
from lifecycle.tasks.parts import Source


class SplitLeakError(RuntimeError):
    """Identical content (or one group) landed in more than one split."""


def assign_splits(rows: list[dict[str, Any]], cfg: SplitConfig) -> list[dict[str, Any]]:
    """Each row's split: the one its source decided (`source_split`), else the hash of its group or content."""
    return [{**row, "split": row.get("source_split") or split_of(split_key(row), cfg)} for row in rows]


def check_no_leak(rows: list[dict[str, Any]]) -> None:
    for key in ("sample_id", "group"):
        splits_of: dict[str, set[str]] = defaultdict(set)
        for row in rows:
            if row.get(key) is not None and not (key == "group" and row[key] == CAPTURED):
                splits_of[row[key]].add(row["split"])
        leaks = {k: sorted(s) for k, s in splits_of.items() if len(s) > 1}
        if leaks:
            examples = ", ".join(f"{k[:16]} in {v}" for k, v in list(leaks.items())[:5])
            raise SplitLeakError(f"{len(leaks)} {key}(s) landed in more than one split: {examples}")


def run(task: Task, paths: TaskPaths) -> dict[str, Any]:
    return split(task.source, task.cfg.split, paths)


def split(source: Source, cfg: SplitConfig, paths: TaskPaths) -> dict[str, Any]:
    rows = assign_splits(read_jsonl(paths.raw_manifest), cfg)
    check_no_leak(rows)
    counts = Counter(row["split"] for row in rows)
    empty = [s for s in SPLITS if counts[s] == 0]
    if empty:
        raise ValueError(f"split(s) {empty} would be empty with {len(rows)} samples; collect more data")
    write_jsonl(paths.split_manifest, rows)
    summary: dict[str, Any] = {"samples": len(rows), **{s: counts[s] for s in SPLITS}}
    captured = Counter(row["split"] for row in rows if row.get("group") == CAPTURED)
    if captured:
        summary["groups"] = {CAPTURED: {"samples": captured.total(), **{s: captured[s] for s in SPLITS}}}
    if source.label_set() is not None:
        summary["classes"] = {
            s: dict(sorted(Counter(c for r in rows if r["split"] == s for c in source.classes_of(r["label"])).items()))
            for s in SPLITS
        }
    write_json(paths.reports("split") / "summary.json", summary)
    return summary
