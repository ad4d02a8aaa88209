"""Model-assisted labeling with Label Studio. The service keeps a sample of production inputs
(`monitoring.capture_inputs`); `export_for_review` pre-labels them with the production model and writes those it is
unsure of as a Label Studio import file (tasks with pre-annotations); `import_reviewed` turns a Label Studio export
of the reviewed labels into samples in the landing zone, which the next run collects.

An export is checked whole before anything is written: a malformed item stops the import with the item named, and
the landing zone only ever gains files (named by content hash, never overwritten). Items a reviewer cancelled
(`was_cancelled` on every annotation) are skipped and counted; their captures stay for a later review."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lifecycle.atomic import write_json, write_text
from lifecycle.batch import answer_files, input_files
from lifecycle.samples import InvalidSample
from lifecycle.serving import Answer, Predictor
from lifecycle.splitting import add_captured
from lifecycle.tasks import Task
from lifecycle.tasks.parts import Labeling, Landing

MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".webp": "image/webp",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
}


class NoLabeling(LookupError):
    """The task has no labeling part (no Label Studio interface)."""


def labeling_of(task: Task) -> Labeling:
    """The task's labeling part; NoLabeling, before any work, when it has none."""
    if task.labeling is None:
        raise NoLabeling(
            f"task {task.name} has no Label Studio interface (capabilities: "
            f"{', '.join(sorted(task.spec.capabilities)) or 'none'})"
        )
    return task.labeling


@dataclass(frozen=True)
class Exported:
    import_file: Path
    config_file: Path
    captured: int
    for_review: int
    unreadable: list[str]


def export_for_review(predictor: Predictor, captured: Path, out_dir: Path, below: float, batch_size: int) -> Exported:
    """Label Studio tasks for the captured inputs whose production prediction is less confident than `below`."""
    task = predictor.task
    labeling = labeling_of(task)
    files = input_files(captured)
    tasks, unreadable = [], []
    for path, outcome in answer_files(predictor, files, batch_size):
        if not isinstance(outcome, Answer):
            unreadable.append(f"{path.name}: {outcome}")
        elif (score := task.outputs.confidence(outcome.prediction) or 0.0) < below:
            tasks.append(review_task(task, path, outcome.prediction, score, predictor.tag))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    import_file = out_dir / f"{stamp}-import.json"
    write_json(import_file, tasks)
    config_file = out_dir / "label_config.xml"
    write_text(config_file, labeling.interface())
    return Exported(import_file, config_file, len(files), len(tasks), unreadable)


def review_task(task: Task, path: Path, prediction: dict[str, Any], score: float, model: str) -> dict[str, Any]:
    """One Label Studio task: the input inline as a data URI (the file needs no server), the capture's name to find
    it again, and the model's answer as a pre-annotation."""
    data = path.read_bytes()
    uri = f"data:{MIME.get(path.suffix.lower(), 'application/octet-stream')};base64,{base64.b64encode(data).decode()}"
    return {
        "data": {task.codec.input_field: uri, "capture": path.name},
        "predictions": [
            {"model_version": model, "score": score, "result": labeling_of(task).to_label_studio(prediction)}
        ],
    }


@dataclass(frozen=True)
class Reviewed:
    data: bytes
    suffix: str
    label: Any
    capture: Path | None


@dataclass(frozen=True)
class Imported:
    written: list[Path]  # files added to the landing zone
    reviewed: int  # items imported
    cancelled: int  # items skipped because every annotation was cancelled; their captures stay
    captures_removed: int


def import_reviewed(task: Task, export_file: Path, captured: Path, incoming: Path) -> Imported:
    """Samples for the landing zone from a Label Studio JSON export, in the layout the task's collect reads.
    Raises ValueError naming the first malformed item, before writing anything. Items whose every annotation was
    cancelled are skipped (counted, their captures kept); imported captures leave the capture folder."""
    try:
        items = json.loads(export_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{export_file}: not a Label Studio JSON export: {e}") from None
    if not isinstance(items, list):
        raise ValueError(f"{export_file}: a Label Studio JSON export is a list of tasks, got {type(items).__name__}")
    labeling = labeling_of(task)
    checked = [_reviewed(task, item, i, captured, export_file) for i, item in enumerate(items)]
    reviewed = [r for r in checked if r is not None]
    digests = [hashlib.sha256(r.data).hexdigest() for r in reviewed]
    landing = [Landing(d[:32] + r.suffix, r.data, r.label) for d, r in zip(digests, reviewed, strict=True)]
    written = labeling.land(incoming, landing)
    add_captured(incoming, digests)
    removed = 0
    for sample in reviewed:
        if sample.capture is not None and sample.capture.exists():
            sample.capture.unlink(missing_ok=True)  # labeled now: the landing zone holds it
            removed += 1
    return Imported(written, len(reviewed), len(checked) - len(reviewed), removed)


def _reviewed(task: Task, item: Any, index: int, captured: Path, export_file: Path) -> Reviewed | None:
    """The reviewed sample of one exported item; None when every annotation of it was cancelled."""
    where = f"{export_file}: item {index}" + (
        f" (task id {item.get('id')})" if isinstance(item, dict) and "id" in item else ""
    )
    if not isinstance(item, dict) or not isinstance(item.get("data"), dict):
        raise ValueError(f"{where}: not a Label Studio task (no 'data' object)")
    given = item.get("annotations") or []
    if not isinstance(given, list) or not all(isinstance(a, dict) for a in given):
        raise ValueError(f"{where}: 'annotations' must be a list of annotation objects")
    annotations = [a for a in given if not a.get("was_cancelled")]
    if given and not annotations:
        return None
    if not annotations:
        raise ValueError(f"{where}: no completed annotation; review it in Label Studio or remove it from the export")
    data, suffix, capture = _input_of(task, item["data"], captured, where)
    try:
        label = labeling_of(task).from_label_studio(annotations[-1].get("result"), data)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise ValueError(f"{where}: unreadable annotation result: {e}") from None
    try:
        task.source.inspect(data, label)
    except InvalidSample as e:
        raise ValueError(f"{where}: {e}") from None
    return Reviewed(data, suffix, label, capture)


def _input_of(task: Task, data: dict[str, Any], captured: Path, where: str) -> tuple[bytes, str, Path | None]:
    name = data.get("capture")
    if isinstance(name, str) and Path(name).name == name and (captured / name).is_file():
        path = captured / name
        return path.read_bytes(), path.suffix.lower(), path
    field = task.codec.input_field
    uri = data.get(field)
    if isinstance(uri, str) and uri.startswith("data:") and ";base64," in uri:
        mime, payload = uri[5:].split(";base64,", 1)
        suffix = next((s for s, m in MIME.items() if m == mime), "")
        try:
            return base64.b64decode(payload, validate=True), suffix, None
        except ValueError:
            raise ValueError(f"{where}: data.{field} is not valid base64") from None
    raise ValueError(f"{where}: neither a captured file 'data.capture' nor an inline 'data.{field}'")
