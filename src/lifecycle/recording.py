"""After a scheduled or drift-triggered run: record the new data and model versions. `dvc push` sends them to the
DVC remote (the project's default remote: a local directory unless you point it at S3 or elsewhere), and
dvc.lock is committed to git with a message naming the run and why it ran."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Recorded:
    pushed: bool
    commit: str | None  # the new commit, None when dvc.lock did not change or committing is off
    message: str


def _run(cmd: list[str], root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def record_run(root: Path, task: str, run_name: str, reason: str, push: bool, commit: bool) -> Recorded:
    """Push the DVC-tracked outputs and commit dvc.lock; raises RuntimeError with the tool's output on failure."""
    message = f"retrain-{task} run {run_name}: {reason}"
    if push:
        remotes = _run([sys.executable, "-m", "dvc", "remote", "list"], root)
        if not remotes.stdout.strip():
            raise RuntimeError(
                f"{root}: no DVC remote to push to; add one (`dvc remote add -d local /path/to/dir`, "
                "or an s3:// URL) or set monitoring.push: false"
            )
        pushed = _run([sys.executable, "-m", "dvc", "push"], root)
        if pushed.returncode != 0:
            raise RuntimeError(f"dvc push failed:\n{pushed.stdout[-2000:]}")
    new_commit = None
    if commit and _run(["git", "status", "--porcelain", "--", "dvc.lock"], root).stdout.strip():
        _run(["git", "add", "dvc.lock"], root)
        committed = _run(["git", "commit", "-m", message, "--", "dvc.lock"], root)
        if committed.returncode != 0:
            raise RuntimeError(f"git commit of dvc.lock failed:\n{committed.stdout[-2000:]}")
        new_commit = _run(["git", "rev-parse", "HEAD"], root).stdout.strip()
    return Recorded(push, new_commit, message)
