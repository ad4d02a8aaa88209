"""The tune stage's Optuna study: its name, storage, sampler and pruner, the baseline trial, the retry of
interrupted trials and the shared trial budget. The study lives in SQLite under the task's model directory, or in
the database `tune.storage` names (PostgreSQL: searches on several machines share one study and its budget).

Trials are stopped early by successive halving: at min_epochs x reduction_factor^k epochs (a rung) a trial runs
on only if it is among the best 1/reduction_factor of the trials that reached that rung; the survivors run the
whole train.epochs, the horizon the final model trains for. Trial 0 is params.yaml's own values: it always runs
to the end (the pruner records its rungs but never stops it), and the others wait for it at each rung, so that
none is promoted only because it got there first."""

from __future__ import annotations

import fcntl
import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifecycle.config import value_at
from lifecycle.paths import TaskPaths
from lifecycle.stages.train import fingerprint
from lifecycle.tasks import Task, build_task

log = logging.getLogger(__name__)
BASELINE = "baseline"  # the user attribute marking trial 0 (and its retry): params.yaml's values
RUNG_SEEN = "pruner_saw_epoch"  # the baseline's last epoch whose value the pruner recorded


@dataclass(frozen=True)
class Search:
    """What a trial needs to find its study and data; plain values, so Dask can ship it to a worker process."""

    task: str
    config: dict[str, Any]  # the task's section of params.yaml, as JSON
    root: str
    study_name: str

    def build_task(self) -> Task:
        return build_task(self.task, self.config)

    @property
    def paths(self) -> TaskPaths:
        return TaskPaths(Path(self.root), self.task)


def study_name(task: Task, paths: TaskPaths) -> str:
    """Same search definition (space, sampler, rungs), model/train settings (train.epochs: the trials' length)
    and data -> same study (resumed or extended); any change of those -> a new study."""
    cfg = task.cfg
    definition = {
        "tune": cfg.tune.fingerprint_fields(),
        "model": cfg.model.model_dump(mode="json"),
        "train": cfg.train.model_dump(mode="json"),
    }
    return f"{task.name}-{fingerprint(definition, paths.split_manifest)[:12]}"


def study_storage(search: Search, task: Task) -> Any:
    """Optuna's RDB storage: `tune.storage` (a database several searches share) or SQLite under the task's model
    directory. Running trials record a heartbeat; one silent for 3 heartbeats was interrupted (its process died)
    and is failed and queued again once, by whichever search notices first."""
    import optuna
    from optuna.exceptions import ExperimentalWarning

    cfg = task.cfg.tune
    engine: dict[str, Any]
    if cfg.storage:
        url, engine = cfg.storage, {"pool_pre_ping": True}
    else:
        search.paths.study.parent.mkdir(parents=True, exist_ok=True)
        url, engine = f"sqlite:///{search.paths.study}", {"connect_args": {"timeout": 60}}  # parallel writers wait
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeats are experimental since Optuna 2.9
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine,
            heartbeat_interval=cfg.heartbeat_seconds,
            grace_period=3 * cfg.heartbeat_seconds,
            heartbeat_stale_trial_callback=retry_once,
        )


def retry_once(study: Any, trial: Any) -> None:
    """An interrupted trial runs again with the same values, once (a retry interrupted again is left failed)."""
    if "retry_of" in trial.user_attrs:
        log.warning(
            "trial %d, a retry of trial %d, was interrupted too; not retried",
            trial.number,
            trial.user_attrs["retry_of"],
        )
        return
    log.warning("trial %d was interrupted; it runs again with the same values", trial.number)
    study.enqueue_trial(trial.params, user_attrs={**trial.user_attrs, "retry_of": trial.number})


def open_study(search: Search, task: Task, worker: int = 0, create: bool = False, storage: Any = None) -> Any:
    import optuna

    cfg = task.cfg.tune
    storage = storage or study_storage(search, task)
    sampler = optuna.samplers.TPESampler(
        seed=cfg.seed + worker, n_startup_trials=cfg.sampler_startup_trials, constant_liar=True
    )  # constant_liar: running trials count as bad guesses, so parallel workers spread out
    # Trials run train.epochs: that is the pruner's maximum resource (the last rung is the end of training).
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=cfg.min_epochs, reduction_factor=cfg.reduction_factor)
    direction = task.goal.direction
    if create:
        return optuna.create_study(
            storage=storage,
            study_name=search.study_name,
            direction=direction,
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
    return optuna.load_study(study_name=search.study_name, storage=storage, sampler=sampler, pruner=pruner)


def prepare_study(search: Search, task: Task) -> Any:
    """Create or reopen the study. A new one starts with params.yaml's values as its first trial (the baseline
    that tuning must beat; the config check ensures they lie in the space); trials whose search was interrupted
    are failed and queued again (see study_storage)."""
    study = open_study(search, task, create=True)
    if not study.trials:
        study.enqueue_trial({key: value_at(task.cfg, key) for key in task.cfg.tune.space}, user_attrs={BASELINE: True})
    fail_stale_trials(study)
    return study


def fail_stale_trials(study: Any) -> None:
    import optuna
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def study_lock(search: Search, task: Task) -> AbstractContextManager[None]:
    """SQLite ignores Optuna's row locks: searches on this machine take turns; a server database locks rows."""
    return nullcontext() if task.cfg.tune.storage else exclusive(search.paths.study.with_suffix(".lock"))


@contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """An exclusive lock between threads and processes on this machine (each call opens its own descriptor)."""
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def finished_trials(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def budget_left(study: Any, trials: int) -> bool:
    """A queued trial (the baseline, a retry) always runs; a new one only while finished + running < trials."""
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    used = sum(s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) for s in states)
    return TrialState.WAITING in states or used < trials


def rung_epochs(min_epochs: int, reduction_factor: int, epochs: int) -> list[int]:
    """The epochs at which the pruner compares trials (the rungs below the end of training)."""
    rungs, rung = [], min_epochs
    while rung < epochs:
        rungs.append(rung)
        rung *= reduction_factor
    return rungs


def await_baseline(search: Search, task: Task, study: Any, epoch: int, poll_seconds: float = 0.5) -> None:
    """Wait until the running baseline has been measured at `epoch` (successive halving promotes a trial that
    reaches a rung first unopposed). A baseline that stopped running (finished, or interrupted and failed by the
    stale-trial check) is not waited for."""
    from optuna.trial import TrialState

    checked = time.monotonic()
    while True:
        baselines = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(BASELINE)]
        running = [t for t in baselines if t.state == TrialState.RUNNING]
        if not running or any(t.user_attrs.get(RUNG_SEEN, 0) >= epoch for t in baselines):
            return
        if time.monotonic() - checked > task.cfg.tune.heartbeat_seconds:
            with study_lock(search, task):
                fail_stale_trials(study)
            checked = time.monotonic()
        time.sleep(poll_seconds)
