"""The tune stage: a real Optuna study in SQLite, trials run by Prefect's thread pool or a local Dask cluster."""

from __future__ import annotations

import os
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from conftest import make_task
from lifecycle.config import load_overrides
from lifecycle.stages.train import train
from lifecycle.stages.tune import Search, open_study, prepare_study, study_name, tune

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


@pytest.mark.slow
def test_interrupted_search_resumes_and_retries_the_running_trial(tiny_params, prepared):
    params = with_tuning(tiny_params, trials=3, parallel=1)
    task = make_task(params)
    search = Search(
        "classify", task.cfg.model_dump(mode="json", by_alias=True), str(prepared.root), study_name(task, prepared)
    )
    # What a killed search leaves behind: the baseline finished, the next trial RUNNING with a reported epoch.
    study = prepare_study(search, task)
    distributions = {k: d.distribution() for k, d in task.cfg.tune.space.items()}
    done = study.ask(distributions)
    study.tell(done, 0.5)
    interrupted = study.ask(distributions)
    interrupted.report(0.4, 1)

    tune(task, prepared)

    trials = open_study(search, task).trials
    assert trials[interrupted.number].state == TrialState.FAIL
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == interrupted.number)
    assert retry.params == interrupted.params and retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 3

    before = len(trials)
    tune(task, prepared)  # the study already has its trials: nothing runs again
    assert len(open_study(search, task).trials) == before
    extended = with_tuning(tiny_params, trials=4, parallel=1)  # a bigger budget extends the same study
    tune(make_task(extended), prepared)
    assert len(open_study(search, task).trials) == before + 1


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
