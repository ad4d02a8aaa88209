"""After a scheduled or drift-triggered run: record the new data and model versions. `dvc push` sends them to the
DVC remote (the project's default remote: a local directory unless you point it at S3 or elsewhere), and one git
commit, naming the run and why it ran, holds dvc.lock with every git-tracked output it describes (the metrics and
reports DVC does not cache, and the .gitignore files DVC keeps beside the cached ones): checking that commit out
and pulling gives a workspace `dvc status` finds unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lifecycle.operations import parse_git_identity


@dataclass(frozen=True)
class Recorded:
    pushed: bool
    commit: str | None  # the new commit, None when nothing it records changed or committing is off
    message: str


def _run(cmd: list[str], root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def tracked_outputs(root: Path) -> list[str]:
    """The paths a run changes that git, not DVC's cache, keeps: dvc.lock, every `cache: false` output of dvc.yaml
    (metrics, plots, reports) and the .gitignore DVC writes beside each cached output; only those that exist."""
    stages = (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages", {})
    paths = {"dvc.lock"}
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                path, flags = _out(entry)
                paths.add(path if flags.get("cache") is False else str(Path(path).parent / ".gitignore"))
    return sorted(p for p in paths if (root / p).exists())


def _out(entry: str | dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if isinstance(entry, str):
        return entry, {}
    ((path, flags),) = entry.items()
    return path, flags or {}


def identity_options(root: Path, git_author: str | None) -> list[str]:
    """`-c user.name=... -c user.email=...` from monitoring.git_author where git is given no identity here (no
    user.email in its config, no GIT_COMMITTER_EMAIL in the environment); nothing otherwise."""
    configured = _run(["git", "config", "user.email"], root).stdout.strip() or os.environ.get("GIT_COMMITTER_EMAIL")
    if configured or git_author is None:
        return []
    name, email = parse_git_identity(git_author)
    return ["-c", f"user.name={name}", "-c", f"user.email={email}"]


def record_run(
    root: Path, task: str, run_name: str, reason: str, push: bool, commit: bool, git_author: str | None = None
) -> Recorded:
    """Push the DVC-tracked outputs and commit dvc.lock with the git-tracked outputs it describes; raises
    RuntimeError with the tool's output on failure."""
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
    paths = tracked_outputs(root)
    if commit and _run(["git", "status", "--porcelain", "--", *paths], root).stdout.strip():
        added = _run(["git", "add", "--", *paths], root)
        if added.returncode != 0:
            raise RuntimeError(f"git add of the run's outputs failed:\n{added.stdout[-2000:]}")
        committed = _run(["git", *identity_options(root, git_author), "commit", "-m", message, "--", *paths], root)
        if committed.returncode != 0:
            hint = "" if git_author else " (no git identity here? set monitoring.git_author: 'Name <email>')"
            raise RuntimeError(
                f"git commit of dvc.lock and the run's outputs failed{hint}:\n{committed.stdout[-2000:]}"
            )
        new_commit = _run(["git", "rev-parse", "HEAD"], root).stdout.strip()
    return Recorded(push, new_commit, message)
