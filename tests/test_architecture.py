"""The shape of the code: dvc.yaml is what the pipeline definition generates (code deps from the imports, params
from the parts' declarations), no import cycles, small modules, and nothing heavy done at import time."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lifecycle.codegraph import CodeGraph
from lifecycle.params import load_params
from lifecycle.pipeline import STAGES, code_roots, dvc_stage_name, param_keys
from lifecycle.tasks import build_task

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
MAX_LINES = 400


@pytest.fixture(scope="module")
def graph() -> CodeGraph:
    return CodeGraph(SRC)


@pytest.fixture(scope="module")
def committed() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.fixture(scope="module")
def tasks() -> list:
    params = load_params(REPO / "params.yaml")
    return [build_task(name, params.task(name)) for name in params.tasks]


def covered(dep_paths: list[str], module_file: Path) -> bool:
    relative = module_file.relative_to(REPO)
    return any(relative == Path(d) or Path(d) in relative.parents for d in dep_paths)


def test_every_module_a_stage_runs_is_one_of_its_deps(graph, committed, tasks):
    """For every stage and task: each project module reachable by imports (function-level ones included) from
    the stage's module, the task's package and params loading must be covered by the stage's deps."""
    missing = []
    for task in tasks:
        for stage in STAGES:
            name = dvc_stage_name(stage.name, task.name)
            deps = committed[name]["deps"]
            parents = graph.reachable(code_roots(stage, task.name))
            for module in sorted(parents):
                if not covered(deps, graph.files[module]):
                    chain = " -> ".join(graph.chain(parents, module))
                    missing.append(f"{name}: {graph.files[module].relative_to(REPO)} (imported via {chain})")
    assert not missing, "dvc.yaml misses code its stages run; run `lifecycle dvc-yaml`:\n" + "\n".join(missing)


def test_deps_are_precise(graph, committed, tasks):
    """No stage lists code it does not reach: editing another task's package re-runs none of this task's stages,
    and no stage depends on the whole source tree."""
    for task in tasks:
        others = [f"src/lifecycle/tasks/{t.name}" for t in tasks if t.name != task.name]
        for stage in STAGES:
            deps = committed[dvc_stage_name(stage.name, task.name)]["deps"]
            assert "src/lifecycle" not in deps and "src" not in deps
            assert not [d for d in deps if any(d == o or d.startswith(o + "/") for o in others)]
            reached = {str(graph.files[m].relative_to(REPO)) for m in graph.reachable(code_roots(stage, task.name))}
            code = [d for d in deps if d.startswith("src/")]
            assert all(d in reached or d == f"src/lifecycle/tasks/{task.name}" for d in code), (stage.name, code)


def test_params_are_what_the_parts_and_stages_read(committed, tasks):
    for task in tasks:
        for stage in STAGES:
            assert committed[dvc_stage_name(stage.name, task.name)]["params"] == param_keys(stage, task)
    assert "ocr.model" in committed["collect-ocr"]["params"], "ocr's inspection counts frames at the model's height"
    assert "classify.model" not in committed["collect-classify"]["params"]


def test_dvc_yaml_is_generated(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lifecycle.cli", "dvc-yaml", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_no_import_cycles(graph):
    assert graph.cycles() == []


def test_modules_stay_small():
    long = {
        str(p.relative_to(REPO)): n
        for p in (SRC / "lifecycle").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_few_formatter_escapes():
    markers = sum(p.read_text().count("# fmt: skip") for d in ("src", "flows") for p in (REPO / d).rglob("*.py"))
    assert markers <= 10, f"{markers} '# fmt: skip' markers in src and flows"


def test_service_imports_without_a_model_store(tmp_path):
    """Importing the service module builds nothing: with an empty model store it imports, and only asking for
    the service says what is missing."""
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "empty-store")}
    code = "import lifecycle.service as s\nprint('imported')\ntry:\n    s.Lifecycle\nexcept RuntimeError as e:\n    print(e)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("imported") and "no production model" in proc.stdout


def test_stages_declare_the_sections_they_read_themselves(graph, tasks):
    """A stage's own reads of its task's config (`task.cfg.<section>` in its module and the stage modules it
    imports) are among the sections the pipeline declares for it (with its parts', the stage's dvc params)."""
    import re

    from lifecycle.tasks import section_schema

    sections = set(section_schema("classify").model_fields)
    for stage in STAGES:
        modules = [m for m in graph.reachable([stage.module]) if m.startswith("lifecycle.stages.")]
        read = {m for name in modules for m in re.findall(r"cfg\.(\w+)", graph.files[name].read_text())} & sections
        for task in tasks:
            declared = set(stage.sections).union(*(getattr(task.parts, p).sections() for p in stage.parts))
            assert read <= declared, (stage.name, task.name, sorted(read - declared))
