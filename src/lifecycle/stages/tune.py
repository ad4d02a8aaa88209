"""Tune: an Optuna study over the search space the task declares in params.yaml (`tune.space`), with a TPE
sampler; trials are stopped early by successive halving and the promising ones run to train.epochs, the horizon the
final model trains for (see lifecycle.stages.study). Each trial is a Prefect task, so the configured task runner
runs them in parallel: threads, or a Dask cluster; an interrupted search resumes where it stopped. Trial 0 is
params.yaml's own values, run to the end: the tuned values go to the DVC-tracked file the train stage applies over
params.yaml only when the best trial beats trial 0 on validation by at least `tune.min_delta`; otherwise that file
has no overrides. The decision and both values are in the file and the stage's report."""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml
from prefect import flow, get_run_logger, task
from prefect.futures import wait

from lifecycle.atomic import atomic_path, write_json, write_text
from lifecycle.config import with_overrides
from lifecycle.figures import pyplot, save_figure
from lifecycle.paths import TaskPaths
from lifecycle.stages.study import (
    BASELINE,
    RUNG_SEEN,
    Search,
    await_baseline,
    budget_left,
    fail_stale_trials,
    finished_trials,
    open_study,
    prepare_study,
    rung_epochs,
    study_lock,
    study_name,
    study_storage,
)
from lifecycle.stages.train import build_loaders, run_fingerprint, seed_everything
from lifecycle.tasks import Task
from lifecycle.trainer import Trainer

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)
TUNED_HEADER = "# Written by `lifecycle tune`; the train stage applies `overrides` over params.yaml.\n"
PARAMS_YAML, TUNED = "params.yaml", "tuned"  # the decisions: which values the train stage uses


@task(task_run_name="trial-{index}")
def run_trial(search: Search, index: int) -> dict[str, Any]:
    """Ask the study for values, train with them as the train stage would (up to train.epochs, unless the pruner
    stops the trial), tell the study the result. Searches sharing the study share its budget: none is asked once
    `tune.trials` trials are finished or running."""
    import optuna
    from optuna.storages._heartbeat import get_heartbeat_thread
    from optuna.trial import TrialState

    base = search.build_task()
    storage = study_storage(search, base)
    study = open_study(search, base, worker=index, storage=storage)
    with study_lock(search, base):
        fail_stale_trials(study)
        if not budget_left(study, base.cfg.tune.trials):
            return {"number": None, "state": "SKIPPED", "params": {}}
        with warnings.catch_warnings():  # Optuna expects heartbeats with study.optimize; run_trial is its loop
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            trial = study.ask({key: dim.distribution() for key, dim in base.cfg.tune.space.items()})
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    trial_cfg = with_overrides(base.cfg, {**trial.params, "train.progress": False})
    started = time.perf_counter()
    try:
        with get_heartbeat_thread(trial._trial_id, storage):  # what study.optimize runs around each trial
            value = fit_trial(search, base.with_config(trial_cfg), trial)
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


def fit_trial(search: Search, task: Task, trial: Any) -> float:
    """The train stage's loop on the trial's config; reports each epoch's validation metric so the pruner can
    stop a trial at a rung. The baseline is never stopped: the pruner only records its values, which the other
    trials wait for at each rung. An interrupted trial resumes from its checkpoint when it is run again."""
    import optuna

    paths, cfg = search.paths, task.cfg.tune
    seed_everything(task.cfg.train.seed)
    task, train_loader, val_loader = build_loaders(task, paths)
    fingerprint = run_fingerprint(task, paths)
    # Named after the first attempt, so a trial queued again after an interruption resumes its checkpoint.
    checkpoint = paths.trial_checkpoints / f"trial-{trial.user_attrs.get('retry_of', trial.number)}.pt"
    baseline = bool(trial.user_attrs.get(BASELINE))
    rungs = rung_epochs(cfg.min_epochs, cfg.reduction_factor, task.cfg.train.epochs)

    def report(entry: Any) -> None:
        value = entry.val_metrics[task.goal.metric]
        trial.report(value, entry.epoch)
        trial.set_user_attr("epochs", entry.epoch)
        if baseline:
            trial.should_prune()  # records the rung values the other trials are measured against; never obeyed
            trial.set_user_attr(RUNG_SEEN, entry.epoch)
            return
        if entry.epoch in rungs:
            await_baseline(search, task, trial.study, entry.epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(
                f"val {task.goal.metric} {value:.4f} at epoch {entry.epoch} is not among the best "
                f"1/{cfg.reduction_factor} of the trials measured there"
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
        write_tuned(paths, {"decision": PARAMS_YAML, "reason": f"params.yaml's values: {reason}", "overrides": {}})
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


def decide(task: Task, study: Any) -> dict[str, Any]:
    """Tuned values or params.yaml's: the tuned ones only when the best trial (one that ran the whole train.epochs)
    beats trial 0 (params.yaml's values, always run to the end) on validation by at least tune.min_delta."""
    from optuna.trial import TrialState

    min_delta, metric = task.cfg.tune.min_delta, f"val_{task.goal.metric}"
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = study.best_trial
    baseline = next((t for t in complete if t.user_attrs.get(BASELINE)), None)
    numbers = {"best_trial": best.number, f"best_{metric}": best.value, "best_params": best.params}
    keep = {"decision": PARAMS_YAML, "overrides": {}}
    if baseline is None:
        reason = "trial 0 (params.yaml's values) did not finish, so no tuned values are shown to beat them"
        return {**keep, "reason": f"params.yaml's values: {reason}", **numbers}
    gain = task.goal.gain(best.value, baseline.value)
    numbers |= {f"baseline_{metric}": baseline.value, "gain_over_baseline": gain, "min_delta": min_delta}
    ran = f"{len(complete) - 1} other trial(s) ran to the end"
    if best.number == baseline.number:
        reason = f"params.yaml's values: their trial 0 is the best trial, {metric} {baseline.value:.4f}; {ran}"
        return {**keep, "reason": reason, **numbers}
    versus = f"trial {best.number}'s {metric} {best.value:.4f} vs trial 0's (params.yaml's values) {baseline.value:.4f}"
    if gain > 0 and gain >= min_delta:
        reason = f"tuned values: {versus}, a gain of {gain:.4f} >= tune.min_delta {min_delta}"
        return {"decision": TUNED, "reason": reason, "overrides": best.params, **numbers}
    reason = f"params.yaml's values: {versus}, a gain of {gain:.4f} short of tune.min_delta {min_delta} (or not > 0)"
    return {**keep, "reason": reason, **numbers}


def write_results(search: Search, task: Task, study: Any, failed: list[str | None], seconds: float) -> dict[str, Any]:
    """tuned.yaml (the decision and the values train applies), summary.json, trials.csv and the plots."""
    from optuna.trial import TrialState

    paths, cfg = search.paths, task.cfg.tune
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise RuntimeError(f"tune: no trial of study {search.study_name} completed; failures: {failed or 'none'}")
    decision = decide(task, study)
    states = [t.state.name.lower() for t in study.trials]
    summary = {
        "enabled": True,
        "study": search.study_name,
        "runner": cfg.runner,
        **decision,
        "max_epochs": task.cfg.train.epochs,
        "rungs": rung_epochs(cfg.min_epochs, cfg.reduction_factor, task.cfg.train.epochs),
        "epochs_run": sum(t.user_attrs.get("epochs", 0) for t in study.trials),
        "trials": len(study.trials),
        **{state: states.count(state) for state in ("complete", "pruned", "fail")},
        "seconds": round(seconds, 1),
        "failures_this_run": failed,
    }
    log.info("%s tune: %s", task.name, decision["reason"])
    out = paths.reports("tune")
    write_tuned(paths, {"study": search.study_name, **decision})
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
