"""The tune stage: a real Optuna study in SQLite, trials run by Prefect's thread pool or a local Dask cluster."""

from __future__ import annotations

import copy
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
from lifecycle.stages.study import Search, open_study, prepare_study, study_name, study_storage
from lifecycle.stages.train import train
from lifecycle.stages.tune import tune
from lifecycle.tuning import tuning_decision

SPACE = {"train.lr": {"low": 0.002, "high": 0.05, "log": True}, "model.width": {"choices": [4, 6]}}


def with_tuning(params: dict[str, Any], **tune_cfg: Any) -> dict[str, Any]:
    params["classify"]["tune"] = {
        "enabled": True,
        "trials": 3,
        "parallel": 2,
        "min_epochs": 1,
        "space": SPACE,
        **tune_cfg,
    }
    return params


def stored_study(paths, task) -> optuna.Study:
    return optuna.load_study(study_name=study_name(task, paths), storage=f"sqlite:///{paths.study}")


def test_disabled_tuning_leaves_params_yaml_values(tiny_params, prepared):
    summary = tune(make_task(tiny_params), prepared)
    assert summary == {"enabled": False, "reason": "tune.enabled is false"}
    assert load_overrides(prepared.tuned) == {}


def trained_config(paths) -> dict[str, Any]:
    import torch

    return torch.load(paths.model, weights_only=True)["config"]


@pytest.mark.slow
def test_tuned_values_are_used_only_when_they_beat_trial_0_by_min_delta(tiny_params, prepared):
    """params.yaml's lr is broken (1e-6: chance level); the space's alternative (0.03) learns. Trial 0 and the
    alternative run side by side on threads, both the whole train.epochs (no rung before: at one or two epochs
    these tiny models are at chance level either way). With min_delta 0.1 the tuned value wins; with a min_delta
    no gain can meet (1.0) the same study (min_delta does not define it) keeps params.yaml's values."""
    tiny_params["classify"]["train"] |= {"lr": 1e-6, "epochs": 4, "batch_size": 8}
    space = {"train.lr": {"choices": [1e-6, 0.03]}}  # the seeded sampler (tune.seed 0) picks 0.03 on either worker
    params = with_tuning(tiny_params, trials=2, parallel=2, space=space, min_epochs=4, min_delta=0.1)
    task = make_task(params)
    summary = tune(task, prepared)

    study = stored_study(prepared, task)
    baseline, tuned = study.trials
    epochs = list(range(1, params["classify"]["train"]["epochs"] + 1))
    assert baseline.user_attrs["baseline"] and baseline.params == {"train.lr": 1e-6}
    assert sorted(baseline.intermediate_values) == epochs and baseline.state == TrialState.COMPLETE, "full length"
    assert tuned.params == {"train.lr": 0.03} and sorted(tuned.intermediate_values) == epochs
    assert (summary["baseline_val_accuracy"], summary["best_val_accuracy"]) == (baseline.value, tuned.value)
    assert tuned.value - baseline.value >= 0.1 and summary["gain_over_baseline"] == tuned.value - baseline.value
    assert summary["decision"] == "tuned" and summary["reason"].startswith("tuned values: trial 1's val_accuracy")
    assert load_overrides(prepared.tuned) == {"train.lr": 0.03}
    assert (prepared.reports("tune") / "figures" / "history.png").stat().st_size > 0
    assert len((prepared.reports("tune") / "trials.csv").read_text().splitlines()) == 1 + 2
    train_summary = train(make_task(params), prepared)  # params.yaml still says lr 1e-6: the tuned value wins
    assert trained_config(prepared)["train"]["lr"] == 0.03 and train_summary["tuning"] == summary["reason"]

    params["classify"]["tune"]["min_delta"] = 1.0
    strict = tune(make_task(params), prepared)
    assert strict["study"] == summary["study"] and len(stored_study(prepared, task).trials) == 2, "nothing ran again"
    assert strict["decision"] == "params.yaml" and load_overrides(prepared.tuned) == {}
    assert (strict["baseline_val_accuracy"], strict["best_val_accuracy"]) == (baseline.value, tuned.value)
    assert "short of tune.min_delta 1.0" in strict["reason"]
    assert tuning_decision(prepared.tuned) == strict["reason"], "what the train stage reads, logs and reports"


def interrupt_a_search(search: Search, task: Any) -> Any:
    """What a killed search leaves behind: the baseline (trial 0) RUNNING with a reported epoch and a heartbeat that
    stopped (older than the grace period of three heartbeats), and trial 1 finished, perfect at the first rung."""
    storage = study_storage(search, task)
    study = prepare_study(search, task)
    distributions = {k: d.distribution() for k, d in task.cfg.tune.space.items()}
    interrupted = study.ask(distributions)
    interrupted.report(0.4, 1)
    done = study.ask(distributions)
    done.report(1.0, 1)
    assert not done.should_prune()  # the pruner records its rung value
    study.tell(done, 1.0)
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
    retry = retries[0]
    assert retry.params == interrupted.params and retry.user_attrs["baseline"]
    # below trial 1's 1.0 at the first rung, successive halving would stop it there: trial 0 is never stopped
    assert retry.intermediate_values[1] < 1.0 and sorted(retry.intermediate_values) == [1, 2]
    assert retry.state == TrialState.COMPLETE
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

    tiny_params["classify"]["train"]["epochs"] = 1  # one-epoch trials: this test is about the shared study
    with postgres_database("lifecycle_optuna") as database:
        params = with_tuning(tiny_params, trials=4, parallel=1, heartbeat_seconds=2, storage=f"postgresql://{database}")
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
        decided = yaml.safe_load(prepared.tuned.read_text())
        best = open_study(search, task).best_trial
        assert decided["overrides"] == (best.params if decided["decision"] == "tuned" else {}), decided


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
    bad["classify"]["tune"]["space"] = {"train.lr": {"low": 0.02, "high": 0.1}}  # params.yaml's lr is 0.01
    with pytest.raises(ConfigError, match=r"tune.space\['train.lr'\] does not contain params.yaml's train.lr = 0.01"):
        parse_params(bad)
    bad["classify"]["tune"] |= {"space": SPACE, "min_epochs": 3}
    with pytest.raises(ConfigError, match=r"tune.min_epochs \(3\) must not exceed train.epochs \(2\)"):
        parse_params(bad)
    bad["classify"]["tune"] |= {"min_epochs": 1, "epochs": 2}
    with pytest.raises(ConfigError, match=r"tune.epochs is retired: trials now run up to train.epochs"):
        parse_params(bad)


def test_tuned_file_errors_name_the_file(tmp_path):
    from lifecycle.config import ConfigError

    tuned = tmp_path / "tuned.yaml"
    tuned.write_text(yaml.safe_dump({"overrides": ["train.lr"]}))
    with pytest.raises(ConfigError, match="tuned.yaml: 'overrides' must be a mapping"):
        load_overrides(tuned)


def test_the_study_is_named_after_the_search_definition(tiny_params, tmp_path):
    """Rungs, space and the trials' length (train.epochs) define the study; the budget and min_delta do not."""
    from lifecycle.paths import TaskPaths

    paths = TaskPaths(tmp_path, "classify")
    paths.split_manifest.parent.mkdir(parents=True)
    paths.split_manifest.write_text('{"path": "a.png", "split": "train"}\n')

    def name(**tune_cfg: Any) -> str:
        return study_name(make_task(with_tuning(copy.deepcopy(tiny_params), **tune_cfg)), paths)

    same = {name(), name(trials=9, parallel=1, min_delta=0.5)}
    assert len(same) == 1
    other = {name(min_epochs=2), name(reduction_factor=2), name(space={"train.lr": SPACE["train.lr"]})}
    tiny_params["classify"]["train"]["epochs"] = 3
    other.add(name())
    assert len(other) == 4 and not other & same
