"""Export: classify and ocr models run in ONNX Runtime like the eager model; pt2 reloads; the contract beside."""

import copy
import json

import numpy as np
import pytest
import torch

from conftest import TINY_CLASSIFY, TINY_OCR, make_task
from lifecycle.export import Exported, example_inputs, export
from lifecycle.models import load_model
from lifecycle.paths import TaskPaths
from lifecycle.stages import collect, split, train


def trained(tmp_path, name: str, section: dict) -> TaskPaths:
    """A tiny model of `name` trained for one epoch on its own collected and split data."""
    section = copy.deepcopy(section)
    section["train"]["epochs"] = 1
    task = make_task({"tasks": [name], name: section}, name)
    paths = TaskPaths(tmp_path, name)
    collect.run(task, paths)
    split.run(task, paths)
    train.run(task, paths)
    return paths


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One trained project per task, shared by the tests (training is the slow part)."""
    cache = {}

    def get(name: str) -> TaskPaths:
        if name not in cache:
            cache[name] = trained(tmp_path_factory.mktemp(name), name, SECTIONS[name])
        return cache[name]

    return get


SECTIONS = {"classify": TINY_CLASSIFY, "ocr": TINY_OCR}


def flat(values):
    return list(values.values()) if isinstance(values, dict) else [values]


@pytest.mark.parametrize("name", ["classify", "ocr"])
def test_onnx_runtime_matches_the_eager_model(tmp_path, models, name):
    import onnxruntime

    paths = models(name)
    contract_file = export(paths.model, paths, "onnx", tmp_path / "model.onnx")
    contract = json.loads(contract_file.read_text())
    task, model, _ = load_model(paths.model)
    assert contract_file.name == "model.onnx.contract.json" and contract["task"] == name
    assert contract["model"] == task.cfg.model.model_dump(mode="json")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    inputs = example_inputs(task, paths, count=3 if name == "classify" else 2)  # classify: any batch size
    feed = {i.name: x.numpy() for i, x in zip(session.get_inputs(), flat(inputs), strict=True)}
    with torch.no_grad():
        eager = flat(Exported(task.network, model).eval()(inputs))
    answers = session.run(None, feed)
    assert len(answers) == len(eager)
    for answer, expected in zip(answers, eager, strict=True):
        np.testing.assert_allclose(answer, expected.numpy(), atol=1e-4, rtol=0)


def test_pt2_reloads_and_answers_alike(tmp_path, models):
    paths = models("classify")
    export(paths.model, paths, "pt2", tmp_path / "model.pt2")
    task, model, _ = load_model(paths.model)
    inputs = example_inputs(task, paths)
    program = torch.export.load(tmp_path / "model.pt2")
    with torch.no_grad():
        torch.testing.assert_close(program.module()(inputs), Exported(task.network, model).eval()(inputs))
    assert json.loads((tmp_path / "model.pt2.contract.json").read_text())["classes"] == task.source.label_set()
