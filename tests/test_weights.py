"""Initial weights from local files only: state dicts, checkpoints, torchvision names from the hub cache; unsafe
pickles refused; the head replaced for the task's classes; fine-tuning controls."""

import argparse
import os

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from conftest import make_task
from lifecycle.trainer import Trainer, build_optimizer
from lifecycle.zoo import build_classifier


def classify(tmp_path, arch: str, weights, **train) -> object:
    model = {"arch": arch, "channels": 3, "input_size": 32, "weights": None if weights is None else str(weights)}
    section = {"collect": {"classes": ["a", "b", "c"]}, "model": model, "train": {"progress": False, **train}}
    return make_task({"tasks": ["classify"], "classify": section})


def test_a_state_dict_loads_with_the_head_replaced_and_a_report(tmp_path):
    source = build_classifier("resnet18", 10, 32)
    torch.save(source.state_dict(), tmp_path / "resnet18.pt")
    model, report = classify(tmp_path, "resnet18", tmp_path / "resnet18.pt").network.pretrained()
    assert report["replaced"] == ["fc.weight", "fc.bias"] and report["missing"] == []
    assert report["loaded"] == len(source.state_dict()) - 2
    assert torch.equal(model.net.conv1.weight, source.conv1.weight) and model.net.fc.out_features == 3


def test_a_torchvision_reference_checkpoint_uses_only_its_model_entry(tmp_path):
    source = build_classifier("mobilenet_v3_small", 3, 32)
    checkpoint = {
        "model": source.state_dict(),
        "optimizer": {"state": {}, "param_groups": []},
        "args": argparse.Namespace(lr=0.1, model="mobilenet_v3_small"),  # what train.py of the references saves
        "epoch": 7,
    }
    torch.save(checkpoint, tmp_path / "checkpoint.pth")
    model, report = classify(tmp_path, "mobilenet_v3_small", tmp_path / "checkpoint.pth").network.pretrained()
    assert report["replaced"] == [] and report["loaded"] == len(source.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(model.net.state_dict().values(), source.state_dict().values()))


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_that_would_run_code_is_refused_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"model": RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refused: the file holds Python objects beyond tensors"):
        classify(tmp_path, "resnet18", tmp_path / "evil.pt").network.pretrained()
    assert not (tmp_path / "pwned").exists()


def test_a_missing_file_names_the_exact_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no weights file at {tmp_path / 'nope.pt'}"):
        classify(tmp_path, "resnet18", tmp_path / "nope.pt").network.pretrained()


def test_a_torchvision_name_comes_from_the_hub_cache_only_with_its_normalisation(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    task = classify(tmp_path, "resnet18", "ResNet18_Weights.IMAGENET1K_V1")
    with pytest.raises(
        FileNotFoundError, match=f"nothing is downloaded; place the file resnet18-f37072fd.pth at {expected}"
    ):
        task.network.pretrained()
    expected.parent.mkdir(parents=True)
    torch.save(build_classifier("resnet18", 1000, 224).state_dict(), expected)
    model, report = task.network.pretrained()
    assert report["weights"] == "ResNet18_Weights.IMAGENET1K_V1" and report["replaced"] == ["fc.weight", "fc.bias"]
    fitted = task.codec.fit([torch.zeros(3, 8, 8, dtype=torch.uint8)])["normalize"]
    assert fitted["mean"] == pytest.approx([0.485, 0.456, 0.406]) and fitted["source"].startswith("weights ResNet18")


def test_weights_of_another_architecture_are_an_error_beyond_the_head(tmp_path):
    torch.save(build_classifier("resnet34", 3, 32).state_dict(), tmp_path / "resnet34.pt")
    with pytest.raises(ValueError, match="does not fit this architecture beyond its head"):
        classify(tmp_path, "resnet18", tmp_path / "resnet34.pt").network.pretrained()


def test_frozen_backbone_learns_only_its_head_and_the_backbone_lr_is_scaled(tmp_path):
    torch.manual_seed(0)
    task = classify(tmp_path, "builtin", None, epochs=1, batch_size=8, freeze_backbone_epochs=1, backbone_lr_mult=0.1)
    model = task.network.build()
    optimizer = build_optimizer(model, task.cfg.train, task.network.head_prefix(model))
    assert sorted({g["lr"] for g in optimizer.param_groups}) == pytest.approx(
        [task.cfg.train.lr * 0.1, task.cfg.train.lr]
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = TensorDataset(torch.randn(16, 3, 32, 32), torch.randint(0, 3, (16,)))
    loader = DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    Trainer(task.network, task.goal, task.cfg.train, tmp_path / "ckpt.pt", "run").fit(model, loader, loader)
    after = model.state_dict()
    conv = "features.0.0.weight"
    assert torch.equal(before[conv], after[conv]) and not torch.equal(before["head.1.weight"], after["head.1.weight"])
