"""`lifecycle import`: an existing model becomes the candidate the evaluate stage judges like a trained one."""

import pytest
import torch

from conftest import make_task
from lifecycle.cli import main
from lifecycle.importing import import_model
from lifecycle.models import load_model
from lifecycle.stages import evaluate
from lifecycle.zoo import build_classifier


def test_an_existing_model_is_imported_with_its_head_and_evaluated(prepared, tiny_params, tmp_path):
    task = make_task(tiny_params)
    existing = task.network.build()  # someone's own 10-digit model of the builtin architecture
    torch.save({"model": existing.state_dict()}, tmp_path / "theirs.pt")
    result = import_model(task, prepared, "builtin", str(tmp_path / "theirs.pt"))
    assert result["initial_weights"]["replaced"] == [] and result["normalize"]["source"] == "training split"
    _, model, info = load_model(prepared.model)
    assert info["imported_from"] == str(tmp_path / "theirs.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), existing.state_dict().values()))
    metrics = evaluate.run(task, prepared)
    assert metrics["test_samples"] > 0 and 0 <= metrics["accuracy"] <= 1


def test_a_head_for_other_classes_is_refused(prepared, tiny_params, tmp_path):
    torch.save(build_classifier("resnet18", 3, 28).state_dict(), tmp_path / "three.pt")
    with pytest.raises(ValueError, match="import keeps the file's head, which must have one output per class"):
        import_model(make_task(tiny_params), prepared, "resnet18", str(tmp_path / "three.pt"))
    code = main(["import", "--task", "classify", "--arch", "resnet18", "--weights", str(tmp_path / "missing.pt")])
    assert code == 2 and not prepared.model.exists()
