"""Where each stage reads and writes, for one task. The single place that knows the repository layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TaskPaths:
    root: Path
    task: str

    @property
    def incoming(self) -> Path:
        """The landing zone: new labeled data dropped here is collected on the next run."""
        return self.root / "data" / "incoming" / self.task

    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw" / self.task

    @property
    def raw_manifest(self) -> Path:
        return self.raw / "manifest.jsonl"

    @property
    def quarantine(self) -> Path:
        return self.raw / "quarantine.jsonl"

    @property
    def prepared(self) -> Path:
        return self.root / "data" / "prepared" / self.task

    @property
    def split_manifest(self) -> Path:
        return self.prepared / "manifest.jsonl"

    @property
    def models(self) -> Path:
        return self.root / "models" / self.task

    @property
    def model(self) -> Path:
        return self.models / "model.pt"

    @property
    def checkpoint(self) -> Path:
        """Resume state of the training run in progress; not a DVC output, so DVC never deletes it."""
        return self.models / "checkpoint.pt"

    @property
    def tuned(self) -> Path:
        """The tune stage's best values (a DVC output); the train stage applies them over params.yaml."""
        return self.models / "tuned.yaml"

    @property
    def study(self) -> Path:
        """The Optuna study (SQLite); not a DVC output, so an interrupted search resumes from it."""
        return self.models / "tune" / "study.db"

    @property
    def trial_checkpoints(self) -> Path:
        return self.models / "tune" / "checkpoints"

    def reports(self, stage: str) -> Path:
        return self.root / "reports" / self.task / stage

    @property
    def drift_reports(self) -> Path:
        """The monitor's Evidently reports and decisions (runtime outputs, not DVC's)."""
        return self.root / "reports" / "drift" / self.task

    @property
    def model_card(self) -> Path:
        """Written at promotion beside the decision; the HTML page has the same name with .html."""
        return self.reports("promote") / "model_card.md"


def report_site(root: Path) -> Path:
    """The report site's index, linking every task's reports (rebuilt by `lifecycle report`; not a DVC output)."""
    return root / "reports" / "index.html"
