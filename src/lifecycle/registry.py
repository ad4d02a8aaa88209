"""The production model registry: BentoML's model store, one model name per task, a `stage` label per version.

Stages: `candidate` (stored, being checked, or imported and waiting for `lifecycle promote --candidate`),
`production` (the one served), `archived` (a former production model, eligible for rollback), `rolled_back` (demoted
by a rollback), `rejected` (failed its gate or its serving check).
Nothing is ever deleted. The store is BENTOML_HOME (the project's `.bentoml/` when run through make or the CLI).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from lifecycle.atomic import write_text

STAGE = "stage"
PROMOTED_AT = "promoted_at"
MODEL_FILE = "model.pt"


def store_name(task: str) -> str:
    return f"lifecycle-{task}"


@dataclass(frozen=True)
class StoredModel:
    tag: str
    path: Path
    labels: dict[str, str]
    metadata: dict[str, Any]
    created: datetime

    @property
    def stage(self) -> str:
        return self.labels.get(STAGE, "")

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE


def _stored(model: Any) -> StoredModel:
    return StoredModel(
        str(model.tag), Path(model.path), dict(model.info.labels), dict(model.info.metadata), model.info.creation_time
    )


def versions(task: str) -> list[StoredModel]:
    """Every stored version of the task's model, newest first."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        models = [_stored(m) for m in bentoml.models.list(store_name(task))]
    except NotFound:
        return []
    return sorted(models, key=lambda m: m.created, reverse=True)


def production(task: str) -> StoredModel | None:
    current = [m for m in versions(task) if m.stage == "production"]
    return current[0] if current else None


def get(tag: str) -> StoredModel:
    import bentoml

    return _stored(bentoml.models.get(tag))


def store_candidate(task: str, model_file: Path, metadata: dict[str, Any], extra: tuple[Path, ...] = ()) -> StoredModel:
    """Copy a trained model file (and files that travel with it, e.g. its drift reference) into the store as a new
    version labeled `candidate`."""
    import bentoml

    with bentoml.models.create(store_name(task), labels={STAGE: "candidate"}, metadata=metadata) as model:
        shutil.copyfile(model_file, model.path_of(MODEL_FILE))
        for path in extra:
            shutil.copyfile(path, model.path_of(path.name))
    return get(str(model.tag))


def set_labels(tag: str, **labels: str) -> StoredModel:
    """Update a stored version's labels, rewriting its model.yaml atomically."""
    return _update_info(tag, "labels", labels)


def set_metadata(tag: str, **metadata: Any) -> StoredModel:
    """Add to (or replace entries of) a stored version's metadata, rewriting its model.yaml atomically."""
    return _update_info(tag, "metadata", metadata)


def _update_info(tag: str, key: str, values: dict[str, Any]) -> StoredModel:
    model = get(tag)
    info_file = model.path / "model.yaml"
    info = yaml.safe_load(info_file.read_text(encoding="utf-8"))
    info[key] = {**(info.get(key) or {}), **values}
    write_text(info_file, yaml.safe_dump(info, sort_keys=False))
    return get(tag)


def make_production(task: str, tag: str) -> StoredModel | None:
    """Label `tag` production and the current production model `archived`; returns the one archived."""
    previous = production(task)
    if previous is not None and previous.tag != tag:
        set_labels(previous.tag, **{STAGE: "archived"})
    set_labels(tag, **{STAGE: "production", PROMOTED_AT: datetime.now(UTC).isoformat()})
    return previous


def rollback(task: str) -> tuple[StoredModel, StoredModel]:
    """Make the most recently promoted archived version production again; the current one is labeled
    `rolled_back`. Returns (restored, demoted)."""
    current = production(task)
    if current is None:
        raise LookupError(f"no production model for task '{task}' to roll back from")
    archived = [m for m in versions(task) if m.stage == "archived"]
    if not archived:
        raise LookupError(f"no archived model for task '{task}' to roll back to (only {current.tag} was ever promoted)")
    previous = max(archived, key=lambda m: m.labels.get(PROMOTED_AT, ""))
    set_labels(current.tag, **{STAGE: "rolled_back"})
    set_labels(previous.tag, **{STAGE: "production", PROMOTED_AT: datetime.now(UTC).isoformat()})
    return get(previous.tag), get(current.tag)
