"""The tune stage: a real Optuna study in SQLite, trials run by Prefect's thread pool or a local Dask cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from conftest import make_task
from lifecycle.config import load_overrides
from lifecycle.stages.train import train
from lifecycle.stages.tune import Search, open_study, prepare_study, study_name, study_storage, tune

SPACE = {"train.lr": {"low": 0.002, "high": 0.05, "log": True}, "model.width": {"choices": [4, 6]}}


def with_tuning(params: dict[str, Any], **tune_cfg: Any) -> dict[str, Any]:
    params["classify"]["tune"] = {"enabled": True, "trials": 3, "parallel": 2, "epochs": 2, "space": SPACE, **tune_cfg}
    return params


def stored_study(paths, task) -> optuna.Study:
    return optuna.load_study(study_name=study_name(task, paths), storage=f"sqlite:///{paths.study}")


def test_disabled_tuning_leaves_params_yaml_values(tiny_params, prepared):
    summary = tune(make_task(tiny_params), prepared)
    assert summary == {"enabled": False, "reason": "tune.enabled is false"}
    assert load_overrides(prepared.tuned) == {}


@pytest.mark.slow
def test_three_trial_search_on_threads_feeds_train(tiny_params, prepared):
    params = with_tuning(tiny_params)
    task = make_task(params)
    summary = tune(task, prepared)

    study = stored_study(prepared, task)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3 and summary["trials"] == 3
    baseline = study.trials[0]
    assert baseline.user_attrs["baseline"] and baseline.params == {"train.lr": 0.01, "model.width": 4}
    assert summary["baseline_val_accuracy"] == baseline.value
    best = study.best_trial
    assert load_overrides(prepared.tuned) == best.params
    assert summary["best_val_accuracy"] == best.value >= baseline.value
    assert (prepared.reports("tune") / "figures" / "history.png").stat().st_size > 0
    csv_lines = (prepared.reports("tune") / "trials.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 3

    train(make_task(params), prepared)  # params.yaml still says lr 0.01, width 4: the tuned values win
    import torch

    trained = torch.load(prepared.model, weights_only=True)["config"]
    assert trained["train"]["lr"] == best.params["train.lr"]
    assert trained["model"]["width"] == best.params["model.width"]


def interrupt_a_search(search: Search, task: Any) -> Any:
    """What a killed search leaves behind: the baseline finished, the next trial RUNNING with a reported epoch and a
    heartbeat that stopped (older than the grace period of three heartbeats)."""
    storage = study_storage(search, task)
    study = prepare_study(search, task)
    distributions = {k: d.distribution() for k, d in task.cfg.tune.space.items()}
    done = study.ask(distributions)
    study.tell(done, 0.5)
    interrupted = study.ask(distributions)
    interrupted.report(0.4, 1)
    storage.record_heartbeat(interrupted._trial_id)
    time.sleep(3 * task.cfg.tune.heartbeat_seconds + 1.5)  # SQLite's clock counts whole seconds
    return interrupted


@pytest.mark.slow
def test_interrupted_search_resumes_and_retries_the_running_trial(tiny_params, prepared):
    params = with_tuning(tiny_params, trials=3, parallel=1, heartbeat_seconds=1)
    task = make_task(params)
    search = Search(
        "classify", task.cfg.model_dump(mode="json", by_alias=True), str(prepared.root), study_name(task, prepared)
    )
    interrupted = interrupt_a_search(search, task)

    tune(task, prepared)

    trials = open_study(search, task).trials
    assert trials[interrupted.number].state == TrialState.FAIL
    retries = [t for t in trials if t.user_attrs.get("retry_of") == interrupted.number]
    assert len(retries) == 1, "retried once"
    assert retries[0].params == interrupted.params and retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 3

    before = len(trials)
    tune(task, prepared)  # the study already has its trials: nothing runs again
    assert len(open_study(search, task).trials) == before
    extended = with_tuning(tiny_params, trials=4, parallel=1)  # a bigger budget extends the same study
    tune(make_task(extended), prepared)
    assert len(open_study(search, task).trials) == before + 1


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.mark.slow
def test_two_searches_in_two_processes_share_one_study_in_postgresql(tiny_params, prepared, prefect_harness):
    """`tune.storage: postgresql://...`: after a search elsewhere was killed mid-trial, two `lifecycle tune` processes
    resume the one study together: they share its trial budget, the interrupted trial runs again once with the
    same values, and no trial is run twice."""
    from prefect.settings import PREFECT_API_URL

    from conftest import postgres_database

    with postgres_database("lifecycle_optuna") as database:
        params = with_tuning(
            tiny_params, trials=4, parallel=1, epochs=1, heartbeat_seconds=2, storage=f"postgresql://{database}"
        )
        task = make_task(params)
        search = Search(
            "classify", task.cfg.model_dump(mode="json", by_alias=True), str(prepared.root), study_name(task, prepared)
        )
        interrupted = interrupt_a_search(search, task)
        (prepared.root / "params.yaml").write_text(yaml.safe_dump(params))
        env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "lifecycle.cli", "tune", "--task", "classify"],
                cwd=prepared.root,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [proc.communicate(timeout=600)[0] for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)

        trials = open_study(search, task).trials
        finished = [t for t in trials if t.state in FINISHED]
        # Alone, each search would have run the 3 trials the budget lacked (7 in all). Two may start the last
        # trial at the same moment, so one over the budget can happen; the finished one before the kill counts.
        assert 4 <= len(finished) <= 5, [(t.number, t.state.name) for t in trials]
        assert sum(bool(t.user_attrs.get("baseline")) for t in finished) == 1, "the baseline ran once"
        retries = [t for t in trials if t.user_attrs.get("retry_of") == interrupted.number]
        assert len(retries) == 1 and retries[0].state in FINISHED, "retried once, by one of the two searches"
        assert retries[0].params == interrupted.params and trials[interrupted.number].state == TrialState.FAIL
        ran_by = {t.user_attrs["worker"].rsplit(":", 1)[1] for t in trials if "worker" in t.user_attrs}
        assert ran_by <= {str(p.pid) for p in procs} | {str(os.getpid())}
        print(f"trials run by process: {sorted(t.user_attrs.get('worker', '-') for t in finished)}")

        before = len(trials)
        tune(task, prepared)  # a third search finds the budget spent and the study complete: it runs nothing
        assert len(open_study(search, task).trials) == before
        assert load_overrides(prepared.tuned) == open_study(search, task).best_trial.params


@pytest.mark.slow
def test_search_runs_on_a_local_two_worker_dask_cluster(tiny_params, prepared):
    params = with_tuning(tiny_params, trials=2, parallel=2, runner="dask")
    task = make_task(params)
    summary = tune(task, prepared)

    study = stored_study(prepared, task)
    assert summary["runner"] == "dask" and summary["complete"] + summary["pruned"] == 2
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert all(not w.endswith(f":{os.getpid()}") for w in workers)  # trials ran in the cluster's processes


def test_search_space_errors_name_the_key(tiny_params):
    from lifecycle.config import ConfigError
    from lifecycle.params import parse_params

    bad = with_tuning(tiny_params, space={"train.lrr": {"low": 0.001, "high": 0.1}})
    with pytest.raises(ConfigError, match=r"tune.space\['train.lrr'\].*no such key"):
        parse_params(bad)
    bad["classify"]["tune"]["space"] = {"model.width": {"choices": [8, 2]}}
    with pytest.raises(ConfigError, match=r"tune.space\['model.width'\] = 2.*greater than or equal to 4"):
        parse_params(bad)
    bad["classify"]["tune"]["space"] = {"collect.limit": {"low": 10, "high": 20}}
    with pytest.raises(ConfigError, match=r"only model.<key>, train.<key> keys can be tuned"):
        parse_params(bad)
    bad["classify"]["tune"]["space"] = {"train.lr": {"low": 0.1, "high": 0.01}}
    with pytest.raises(ConfigError, match=r"low \(0.1\) must be below high"):
        parse_params(bad)


def test_tuned_file_errors_name_the_file(tmp_path):
    from lifecycle.config import ConfigError

    tuned = tmp_path / "tuned.yaml"
    tuned.write_text(yaml.safe_dump({"overrides": ["train.lr"]}))
    with pytest.raises(ConfigError, match="tuned.yaml: 'overrides' must be a mapping"):
        load_overrides(tuned)
