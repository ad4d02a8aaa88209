"""Tune: an Optuna study over the search space the task declares in params.yaml (`tune.space`), with a TPE
sampler and a median pruner fed the validation metric after every epoch. Each trial is a Prefect task, so the
configured task runner runs them in parallel: threads, or a Dask cluster. The study lives in SQLite under the
task's model directory, or in the database `tune.storage` names (PostgreSQL: searches on several machines share one
study and its trial budget), so an interrupted search resumes where it stopped; the best values go to a
DVC-tracked file that the train stage applies over params.yaml."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml
from prefect import flow, get_run_logger, task
from prefect.futures import wait

from lifecycle.atomic import atomic_path, write_json, write_text
from lifecycle.config import value_at, with_overrides
from lifecycle.figures import pyplot, save_figure
from lifecycle.paths import TaskPaths
from lifecycle.stages.train import build_loaders, fingerprint, run_fingerprint, seed_everything
from lifecycle.tasks import Task, build_task
from lifecycle.trainer import Trainer

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)
TUNED_HEADER = "# Written by `lifecycle tune`; the train stage applies `overrides` over params.yaml.\n"


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
    """Same search definition, model/train settings and data -> same study (resumed or extended)."""
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
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=cfg.pruner_startup_trials, n_warmup_steps=cfg.pruner_warmup_epochs
    )
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
    that tuning must beat); trials whose search was interrupted are failed and queued again (see study_storage)."""
    study = open_study(search, task, create=True)
    if not study.trials:
        defaults = {key: value_at(task.cfg, key) for key in task.cfg.tune.space}
        if all(_within(dim, defaults[key]) for key, dim in task.cfg.tune.space.items()):
            study.enqueue_trial(defaults, user_attrs={"baseline": True})
        else:
            log.warning("params.yaml's values lie outside tune.space; the study has no baseline trial")
    fail_stale_trials(study)
    return study


def fail_stale_trials(study: Any) -> None:
    import optuna
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


@contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """An exclusive lock between threads and processes on this machine (each call opens its own descriptor)."""
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _within(dim: Any, value: Any) -> bool:
    return value in dim.choices if dim.choices is not None else dim.low <= value <= dim.high


def finished_trials(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


@task(task_run_name="trial-{index}")
def run_trial(search: Search, index: int) -> dict[str, Any]:
    """Ask the study for values, train with them for `tune.epochs` epochs, tell the study the result. Searches
    sharing the study share its budget: none is asked once `tune.trials` trials are finished or running."""
    import optuna
    from optuna.storages._heartbeat import get_heartbeat_thread
    from optuna.trial import TrialState

    base = search.build_task()
    storage = study_storage(search, base)
    study = open_study(search, base, worker=index, storage=storage)
    # SQLite ignores Optuna's row locks: searches on this machine take turns; a server database locks rows itself
    lock = nullcontext() if base.cfg.tune.storage else exclusive(search.paths.study.with_suffix(".lock"))
    with lock:
        fail_stale_trials(study)
        if not _budget_left(study, base.cfg.tune.trials):
            return {"number": None, "state": "SKIPPED", "params": {}}
        with warnings.catch_warnings():  # Optuna expects heartbeats with study.optimize; run_trial is its loop
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            trial = study.ask({key: dim.distribution() for key, dim in base.cfg.tune.space.items()})
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    trial_cfg = with_overrides(
        base.cfg, {**trial.params, "train.epochs": base.cfg.tune.epochs, "train.progress": False}
    )
    started = time.perf_counter()
    try:
        with get_heartbeat_thread(trial._trial_id, storage):  # what study.optimize runs around each trial
            value = fit_trial(base.with_config(trial_cfg), search.paths, trial)
    except optuna.TrialPruned as pruned:
        study.tell(trial, state=TrialState.PRUNED)
        get_run_logger().info("trial %d pruned (%s): %s", trial.number, pruned, trial.params)
        return {"number": trial.number, "state": "PRUNED", "params": trial.params}
    except Exception as e:
        trial.set_user_attr("error", f"{type(e).__name__}: {e}")
        study.tell(trial, state=TrialState.FAIL)
        raise
    trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
    study.tell(trial, value)
    get_run_logger().info("trial %d: val %s %.4f with %s", trial.number, base.goal.metric, value, trial.params)
    return {"number": trial.number, "state": "COMPLETE", "value": value, "params": trial.params}


def _budget_left(study: Any, trials: int) -> bool:
    """A queued trial (the baseline, a retry) always runs; a new one only while finished + running < trials."""
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    used = sum(s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) for s in states)
    return TrialState.WAITING in states or used < trials


def fit_trial(task: Task, paths: TaskPaths, trial: Any) -> float:
    """The train stage's loop on the trial's config; reports each epoch's validation metric so the pruner can
    stop a hopeless trial. An interrupted trial resumes from its checkpoint when it is run again."""
    import optuna

    seed_everything(task.cfg.train.seed)
    task, train_loader, val_loader = build_loaders(task, paths)
    fingerprint = run_fingerprint(task, paths)
    # Named after the first attempt, so a trial queued again after an interruption resumes its checkpoint.
    checkpoint = paths.trial_checkpoints / f"trial-{trial.user_attrs.get('retry_of', trial.number)}.pt"

    def report(entry: Any) -> None:
        value = entry.val_metrics[task.goal.metric]
        trial.report(value, entry.epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(
                f"val {task.goal.metric} {value:.4f} at epoch {entry.epoch} is worse than the median of earlier trials"
            )

    try:
        trainer = Trainer(task.network, task.goal, task.cfg.train, checkpoint, fingerprint, task.name)
        result = trainer.fit(task.network.build(), train_loader, val_loader, on_epoch=report)
    except optuna.TrialPruned:
        checkpoint.unlink(missing_ok=True)
        raise
    checkpoint.unlink(missing_ok=True)
    return result.best_metric


def task_runner(cfg: Any) -> Any:
    """Threads by default; a Dask cluster (local, or at `tune.dask_address`) when `tune.runner: dask`."""
    if cfg.runner == "dask":
        from prefect_dask import DaskTaskRunner

        if cfg.dask_address:
            return DaskTaskRunner(address=cfg.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": cfg.parallel,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            }
        )
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=cfg.parallel)


@flow(name="tune", log_prints=True)
def search_flow(search: Search) -> dict[str, Any]:
    """Run the trials the study still needs, in parallel on the flow's task runner, then write the results. Other
    searches may work on the same study (tune.storage): each trial checks the shared budget when it starts."""
    started = time.perf_counter()
    task = search.build_task()
    study = prepare_study(search, task)
    finished = finished_trials(study)
    remaining = max(task.cfg.tune.trials - finished, 0)
    get_run_logger().info("study %s: %d finished, %d to run", search.study_name, finished, remaining)
    futures = [run_trial.submit(search, index) for index in range(remaining)]
    wait(futures)
    failed = [f.state.message for f in futures if f.state.is_failed()]
    return write_results(search, task, open_study(search, task), failed, time.perf_counter() - started)


def run(task: Task, paths: TaskPaths) -> dict[str, Any]:
    return tune(task, paths)


def tune(task: Task, paths: TaskPaths) -> dict[str, Any]:
    cfg = task.cfg.tune
    if not cfg.enabled or not cfg.space:
        reason = "tune.enabled is false" if not cfg.enabled else "tune.space is empty"
        write_tuned(paths, {"overrides": {}, "reason": reason})
        out = paths.reports("tune")
        write_text(out / "trials.csv", "number,state,value\n")  # DVC expects every declared output
        write_text(out / "figures" / "README.txt", f"No search was run: {reason}.\n")
        summary = {"enabled": False, "reason": reason}
        write_json(out / "summary.json", summary)
        return summary
    search = Search(
        task.name, task.cfg.model_dump(mode="json", by_alias=True), str(paths.root), study_name(task, paths)
    )
    return search_flow.with_options(task_runner=task_runner(cfg))(search)


def write_tuned(paths: TaskPaths, content: dict[str, Any]) -> None:
    write_text(paths.tuned, TUNED_HEADER + yaml.safe_dump(content, sort_keys=False))


def write_results(search: Search, task: Task, study: Any, failed: list[str | None], seconds: float) -> dict[str, Any]:
    """tuned.yaml (the best values), summary.json, trials.csv and the history/importance plots."""
    from optuna.trial import TrialState

    paths = search.paths
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise RuntimeError(f"tune: no trial of study {search.study_name} completed; failures: {failed or 'none'}")
    best = study.best_trial
    baseline = next((t for t in complete if t.user_attrs.get("baseline")), None)
    metric = f"val_{task.goal.metric}"
    states = [t.state.name.lower() for t in study.trials]
    summary = {
        "enabled": True,
        "study": search.study_name,
        "runner": task.cfg.tune.runner,
        "epochs_per_trial": task.cfg.tune.epochs,
        "trials": len(study.trials),
        **{state: states.count(state) for state in ("complete", "pruned", "fail")},
        "best_trial": best.number,
        f"best_{metric}": best.value,
        "best_params": best.params,
        f"baseline_{metric}": baseline.value if baseline else None,
        "gain_over_baseline": task.goal.gain(best.value, baseline.value) if baseline else None,
        "seconds": round(seconds, 1),
        "failures_this_run": failed,
    }
    out = paths.reports("tune")
    write_tuned(paths, {"study": search.study_name, "trial": best.number, metric: best.value, "overrides": best.params})
    with atomic_path(out / "trials.csv") as tmp:
        study.trials_dataframe(attrs=("number", "state", "value", "params", "duration", "user_attrs")).to_csv(
            tmp, index=False
        )
    summary["figures"] = plot_study(study, out / "figures")
    write_json(out / "summary.json", summary)
    return summary


def plot_study(study: Any, out_dir: Path) -> dict[str, str]:
    """Optimisation history and parameter importances as PNGs; a figure that needs more trials is skipped
    with the reason recorded."""

    from optuna.exceptions import ExperimentalWarning

    pyplot()  # the Agg backend, before Optuna draws
    from optuna.visualization import matplotlib as optuna_plots

    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, str] = {}
    for name, draw in (
        ("history", optuna_plots.plot_optimization_history),
        ("importance", optuna_plots.plot_param_importances),
    ):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                axes = draw(study)
            figure = cast("Figure", axes.figure)  # a Figure, never a SubFigure
            save_figure(figure, out_dir / f"{name}.png", dpi=110, bbox_inches="tight")
            figures[name] = f"{out_dir.name}/{name}.png"  # relative to the report directory
        except (ValueError, RuntimeError) as e:  # e.g. importances need two finished trials that differ
            figures[name] = f"skipped: {e}"
    return figures
