"""Collect: store every new sample of the task's sources in the raw, content-addressed, append-only store.

Raw data is never rewritten: a sample is stored once under its SHA-256 and its manifest row never changes; an
embedded sample (one the code generates from a plan: a rendered line, a synthesized utterance) is also known by
its origin and label, so generating it again is not a new sample even when the bytes differ (eSpeak's speech is
not bit-exact). Anything unusable (unreadable, unlabeled, unknown label, conflicting label) goes to the
quarantine with its reason and a copy of its bytes, so nothing disappears silently."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from typing import Any

from lifecycle.atomic import read_jsonl, write_bytes, write_json, write_jsonl
from lifecycle.paths import TaskPaths
from lifecycle.samples import InvalidSample, RawSample, Rejected
from lifecycle.splitting import CAPTURED, captured_digests
from lifecycle.tasks import Task
from lifecycle.tasks.parts import Source

log = logging.getLogger(__name__)


@dataclass
class CollectSummary:
    samples: int
    new: int
    quarantined: int
    new_quarantined: int
    by_source: dict[str, int]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(task: Task, paths: TaskPaths) -> CollectSummary:
    return collect(task.source, paths)


def collect(source: Source, paths: TaskPaths) -> CollectSummary:
    manifest = {row["sample_id"]: row for row in read_jsonl(paths.raw_manifest)}
    quarantine = read_jsonl(paths.quarantine)
    quarantined_keys = {(q["sha256"], q["origin"], q["reason"]) for q in quarantine}
    planned = {(row["origin"], json.dumps(row["label"])) for row in manifest.values() if row["source"] == "embedded"}
    new = 0
    new_quarantined = 0

    def reject(candidate: Rejected) -> None:
        nonlocal new_quarantined
        digest = sha256(candidate.data) if candidate.data is not None else ""
        key = (digest, candidate.origin, candidate.reason)
        if key in quarantined_keys:
            return
        stored = None
        if candidate.data is not None:
            stored = f"quarantine/{digest}{candidate.suffix}"
            if not (paths.raw / stored).exists():
                write_bytes(paths.raw / stored, candidate.data)
        quarantine.append(
            {
                "sha256": digest,
                "origin": candidate.origin,
                "source": candidate.source,
                "reason": candidate.reason,
                "path": stored,
            }
        )
        quarantined_keys.add(key)
        new_quarantined += 1
        log.warning("quarantined %s: %s", candidate.origin, candidate.reason)

    captured = captured_digests(paths.incoming)
    for candidate in source.collect(paths.incoming):
        if isinstance(candidate, Rejected):
            reject(candidate)
            continue
        if candidate.source == "embedded" and (candidate.origin, json.dumps(candidate.label)) in planned:
            continue
        digest = sha256(candidate.data)
        if candidate.source == "incoming" and digest in captured:  # a reviewed production input
            candidate = replace(candidate, source=CAPTURED, group=CAPTURED)
        known = manifest.get(digest)
        if known is not None:
            if known["label"] != candidate.label:
                reject(
                    _as_rejected(
                        candidate,
                        f"conflicting label {candidate.label!r}: the same content was "
                        f"collected earlier as {known['label']!r} from {known['origin']}",
                    )
                )
            continue
        try:
            meta = source.inspect(candidate.data, candidate.label)
        except InvalidSample as e:
            reject(_as_rejected(candidate, str(e)))
            continue
        relative = f"samples/{digest[:2]}/{digest}{candidate.suffix}"
        if not (paths.raw / relative).exists():
            write_bytes(paths.raw / relative, candidate.data)
        manifest[digest] = _row(digest, relative, candidate, meta)
        new += 1

    # The data files are written first and the manifests last, each atomically: an interrupted collect
    # leaves at most unreferenced sample files, which the next run adopts.
    write_jsonl(paths.raw_manifest, manifest.values())
    write_jsonl(paths.quarantine, quarantine)
    by_source: dict[str, int] = {}
    for row in manifest.values():
        by_source[row["source"]] = by_source.get(row["source"], 0) + 1
    summary = CollectSummary(len(manifest), new, len(quarantine), new_quarantined, by_source)
    write_json(paths.reports("collect") / "summary.json", summary.__dict__)
    return summary


def _as_rejected(candidate: RawSample, reason: str) -> Rejected:
    return Rejected(candidate.source, candidate.origin, reason, candidate.data, candidate.suffix)


def _row(digest: str, relative: str, candidate: RawSample, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "sample_id": digest,
        "path": relative,
        "label": candidate.label,
        "source": candidate.source,
        "origin": candidate.origin,
        "group": candidate.group,
        **({"source_split": candidate.split} if candidate.split else {}),
        **meta,
    }
