"""The pipeline, defined once: its stages in order, what each reads and writes. The CLI runs a stage by this
list, the Prefect flow runs them in this order, and dvc.yaml is generated from it (`lifecycle dvc-yaml`): each
stage's code dependencies are the project modules its code imports (the stage's module, the task's package,
params loading: computed from the source by lifecycle.codegraph), and its params are the config sections its
task parts declare (`Part.reads`) plus those the stage reads itself."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifecycle.codegraph import CodeGraph
from lifecycle.paths import TaskPaths
from lifecycle.tasks import Task, section_schema

RAW, PREPARED, MODEL = "data/raw/{task}", "data/prepared/{task}", "models/{task}/model.pt"
MODEL_CARD, MODEL_CARD_HTML = "reports/{task}/promote/model_card.md", "reports/{task}/promote/model_card.html"


@dataclass(frozen=True)
class Stage:
    name: str
    parts: tuple[str, ...]  # the task parts the stage runs, configured from params.yaml
    sections: tuple[str, ...]  # the sections of the task's config the stage itself reads
    deps: tuple[str, ...]  # data and artifacts it reads; {task} is the task's name
    outs: tuple[str, ...] = ()
    persist: tuple[str, ...] = ()  # outs DVC must never delete before the stage runs (append-only stores)
    uncached: tuple[str, ...] = ()  # outs kept in git, not in DVC's cache
    metrics: tuple[str, ...] = ()
    plots: tuple[tuple[str, dict[str, str]], ...] = ()

    @property
    def module(self) -> str:
        return f"lifecycle.stages.{self.name}"

    def run(self, task: Task, paths: TaskPaths) -> Any:
        """Run this stage for one task (the stage module's `run(task, paths)`)."""
        return importlib.import_module(self.module).run(task, paths)


STAGES: tuple[Stage, ...] = (
    Stage(
        "collect",
        parts=("source",),
        sections=(),
        deps=("data/incoming/{task}",),
        outs=(RAW,),
        persist=(RAW,),
        metrics=("reports/{task}/collect/summary.json",),
    ),
    Stage(
        "validate",
        parts=("source",),
        sections=("validation",),
        deps=(RAW,),
        outs=("reports/{task}/validate/data_docs",),
        metrics=("reports/{task}/validate/result.json",),
    ),
    Stage(
        "split",
        parts=("source",),
        sections=("split",),
        deps=(RAW, "reports/{task}/validate/result.json"),
        outs=(PREPARED,),
        metrics=("reports/{task}/split/summary.json",),
    ),
    Stage(
        "tune",
        parts=("codec", "network"),
        sections=("tune", "model", "train", "evaluate"),
        deps=(RAW, PREPARED),
        outs=("models/{task}/tuned.yaml", "reports/{task}/tune/figures"),
        metrics=("reports/{task}/tune/summary.json",),
        plots=(("reports/{task}/tune/trials.csv", {"x": "number", "y": "value"}),),
    ),
    Stage(
        "train",
        parts=("codec", "network", "reports"),
        sections=("model", "train", "evaluate"),
        deps=(RAW, PREPARED, "models/{task}/tuned.yaml"),
        outs=(MODEL, "reports/{task}/train/augmented.png"),
        metrics=("reports/{task}/train/summary.json",),
        plots=(("reports/{task}/train/live/plots/metrics", {"x": "step"}),),
    ),
    # evaluate and promote rebuild the task from the model file (as it was trained); of params.yaml they read
    # only their own settings
    Stage(
        "evaluate",
        parts=(),
        sections=("evaluate", "train"),
        deps=(RAW, PREPARED, MODEL),
        outs=(
            "reports/{task}/evaluate/predictions.jsonl",
            "reports/{task}/evaluate/figures",
            "reports/{task}/evaluate/reference.parquet",
        ),
        metrics=(
            "reports/{task}/evaluate/metrics.json",
            "reports/{task}/evaluate/per_class.json",
            "reports/{task}/evaluate/groups.json",
        ),
    ),
    Stage(
        "promote",
        parts=(),
        sections=("promote", "evaluate", "train"),
        deps=(
            MODEL,
            "reports/{task}/evaluate/metrics.json",
            "reports/{task}/evaluate/predictions.jsonl",
            "reports/{task}/evaluate/reference.parquet",
        ),
        outs=("reports/{task}/promote/decision.md", MODEL_CARD, MODEL_CARD_HTML),
        uncached=("reports/{task}/promote/decision.md", MODEL_CARD, MODEL_CARD_HTML),
        metrics=("reports/{task}/promote/decision.json",),
    ),
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)


def get_stage(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(f"unknown stage '{name}'; the pipeline is {', '.join(STAGE_NAMES)}")


def dvc_stage_name(stage: str, task: str) -> str:
    """The stage's name in dvc.yaml: `dvc repro train-classify`."""
    return f"{stage}-{task}"


def code_roots(stage: Stage, task: str) -> list[str]:
    """The modules a stage's command runs: the stage, the task's package and params loading."""
    return [stage.module, f"lifecycle.tasks.{task}", "lifecycle.params", "lifecycle.config"]


def code_deps(graph: CodeGraph, stage: Stage, task: str) -> list[str]:
    """Every project module the stage reaches through imports, as paths: the task's package as its folder."""
    package = f"lifecycle.tasks.{task}"
    reached = set(graph.reachable(code_roots(stage, task))) - set(graph.package_modules(package))
    root = graph.src.parent
    folder = str(graph.files[package].parent.relative_to(root))
    return [folder, *sorted(str(graph.files[m].relative_to(root)) for m in reached)]


def param_keys(stage: Stage, task: Task) -> list[str]:
    """`<task>.<section>` keys of params.yaml the stage reads: its own and its parts' (`Part.sections`)."""
    sections = set(stage.sections).union(*(getattr(task.parts, part).sections() for part in stage.parts))
    aliases = {name: info.alias or name for name, info in section_schema(task.name).model_fields.items()}
    return sorted(f"{task.name}.{aliases[s]}" for s in sections)


DVC_YAML_HEADER = """\
# Generated by `lifecycle dvc-yaml` from the pipeline definition (src/lifecycle/pipeline.py) for params.yaml's
# tasks: do not edit by hand. Each stage lists the project modules its code imports, the params its task parts
# and the stage itself read, and what it writes; a test fails when this file is not what the code generates.
"""


def dvc_yaml_text(tasks: list[Task], src: Path) -> str:
    """dvc.yaml as `lifecycle dvc-yaml` writes it: the header, then `dvc_yaml`."""
    import yaml

    return DVC_YAML_HEADER + yaml.safe_dump(dvc_yaml(tasks, src), sort_keys=False, width=120)


def tasks_in(params_path: Path) -> list[Task]:
    """Every task `params_path` lists, built from its params: what dvc.yaml is generated for."""
    from lifecycle.params import load_params
    from lifecycle.tasks import build_task

    params = load_params(params_path)
    return [build_task(name, params.task(name)) for name in params.tasks]


def dvc_yaml(tasks: list[Task], src: Path) -> dict[str, Any]:
    """dvc.yaml for `tasks`: one DVC stage per pipeline stage and task, in pipeline order for each task."""
    graph = CodeGraph(src)
    stages: dict[str, Any] = {}
    for task in tasks:
        for stage in STAGES:
            stages[dvc_stage_name(stage.name, task.name)] = dvc_stage(graph, stage, task)
    plots = [
        {f"reports/{t.name}/evaluate/figures/{path}": dict(props)}
        for t in tasks
        for path, props in t.reports.plots.items()
    ]
    return {"stages": stages, **({"plots": plots} if plots else {})}


def dvc_stage(graph: CodeGraph, stage: Stage, task: Task) -> dict[str, Any]:
    name = task.name

    def out(path: str) -> Any:
        path = path.format(task=name)
        flags = {"persist": True} if path in {p.format(task=name) for p in stage.persist} else {}
        flags |= {"cache": False} if path in {p.format(task=name) for p in stage.uncached} else {}
        return {path: flags} if flags else path

    entry: dict[str, Any] = {
        "cmd": f"lifecycle {stage.name} --task {name}",
        "deps": code_deps(graph, stage, name) + [d.format(task=name) for d in stage.deps],
        "params": param_keys(stage, task),
    }
    if stage.outs:
        entry["outs"] = [out(p) for p in stage.outs]
    entry["metrics"] = [{m.format(task=name): {"cache": False}} for m in stage.metrics]
    if stage.plots:
        entry["plots"] = [{p.format(task=name): {**axes, "cache": False}} for p, axes in stage.plots]
    return entry
