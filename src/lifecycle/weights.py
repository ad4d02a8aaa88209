"""Initial weights from files the user already has: a state dict, a full checkpoint (this project's model files,
torchvision's reference-script checkpoints), or a torchvision weights name found in the local torch hub cache.
Nothing is downloaded, and every file is read tensors-only (`weights_only=True`): a pickle that would run code is
refused, never executed."""

from __future__ import annotations

import argparse
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

CONTRACT_SUFFIX = ".contract.json"  # the pre/post-processing contract written beside an exported model


@dataclass(frozen=True)
class Weights:
    """A state dict and what is known of the preprocessing it expects (per-channel mean/std of [0, 1] pixels)."""

    state_dict: dict[str, torch.Tensor]
    origin: str
    mean: list[float] | None = None
    std: list[float] | None = None
    config: dict[str, Any] | None = None  # this project's model file: the task config it was trained with


@dataclass
class LoadReport:
    loaded: int = 0
    replaced: list[str] = field(default_factory=list)  # head keys left freshly initialised (other classes)
    missing: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"loaded": self.loaded, "replaced": self.replaced, "missing": self.missing}


def is_weights_name(spec: str) -> bool:
    """`ResNet18_Weights.IMAGENET1K_V1` (a torchvision weights enum member) rather than a file path."""
    enum, _, member = spec.partition(".")
    return enum.endswith("_Weights") and member.isidentifier() and "/" not in spec


def hub_file(spec: str) -> tuple[Path, Any]:
    """Where torchvision keeps the named weights in the local hub cache (`$TORCH_HOME/hub/checkpoints`), and the
    weights enum member."""
    from torchvision.models import get_weight

    try:
        weights = get_weight(spec)
    except (ValueError, KeyError, AttributeError) as e:
        raise ValueError(f"'{spec}' is not a torchvision weights name ({e})") from None
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name, weights


def read_weights(spec: str) -> Weights:
    """The weights at `spec`: a torchvision weights name (from the hub cache only) or a local file."""
    if is_weights_name(spec):
        path, enum = hub_file(spec)
        if not path.exists():
            raise FileNotFoundError(
                f"weights {spec} are not in the local torch hub cache: nothing is downloaded; place the file "
                f"{Path(enum.url).name} at {path} (from {enum.url})"
            )
        transform = enum.transforms()  # a detector's weights normalise inside the model: their transform has no mean
        mean, std = getattr(transform, "mean", None), getattr(transform, "std", None)
        return Weights(
            _state_dict_of(_load(path), path),
            spec,
            None if mean is None else list(mean),
            None if std is None else list(std),
        )
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path.resolve()}; place it there or fix model.weights")
    payload = _load(path)
    config = payload.get("config") if isinstance(payload, dict) and "task" in payload else None
    mean, std = _contract_normalization(path, config)
    return Weights(_state_dict_of(payload, path), str(path), mean, std, config)


def _load(path: Path) -> Any:
    try:
        # torchvision's reference scripts save their argparse arguments beside the model: plain data, allowed
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0]
        raise ValueError(
            f"{path}: refused: the file holds Python objects beyond tensors, which loading would execute ({first}); "
            "save the model's state_dict() instead"
        ) from None
    except (RuntimeError, EOFError) as e:
        raise ValueError(f"{path}: not a readable PyTorch file ({e})") from None


def _state_dict_of(payload: Any, path: Path) -> dict[str, torch.Tensor]:
    """The model's tensors in a state dict or a checkpoint (`model`, `state_dict` or `model_state_dict` entry);
    a DistributedDataParallel `module.` prefix is dropped."""
    if isinstance(payload, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not isinstance(payload, dict) or not payload or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise ValueError(f"{path}: no state dict found (expected tensors by name, or a 'model' / 'state_dict' entry)")
    return {k.removeprefix("module."): v for k, v in payload.items()}


def _contract_normalization(path: Path, config: dict[str, Any] | None) -> tuple[list[float] | None, list[float] | None]:
    """mean/std from this project's model config, else from the contract file beside the weights."""
    normalize = (config or {}).get("model", {}).get("normalize")
    contract = path.with_name(path.name + CONTRACT_SUFFIX)
    if normalize is None and contract.is_file():
        normalize = json.loads(contract.read_text()).get("normalize")
    return (normalize["mean"], normalize["std"]) if normalize else (None, None)


def load_into(model: nn.Module, state: dict[str, torch.Tensor], head: str, origin: str) -> LoadReport:
    """Load `state` into `model`: keys under the `head` prefix whose shapes differ (other classes) are replaced,
    i.e. keep their fresh values; any other missing, unexpected or mismatched key is an error."""
    own = model.state_dict()
    report, usable, problems = LoadReport(), {}, []
    for key, tensor in state.items():
        if key not in own:
            problems.append(f"unexpected {key}")
        elif own[key].shape != tensor.shape:
            if key.startswith(head):
                report.replaced.append(key)
            else:
                problems.append(f"{key}: {tuple(tensor.shape)} in the file, {tuple(own[key].shape)} in the model")
        else:
            usable[key] = tensor
    report.missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    problems += [f"missing {k}" for k in report.missing if not k.startswith(head)]
    if problems:
        raise ValueError(
            f"{origin} does not fit this architecture beyond its head ({len(problems)} problems: "
            f"{'; '.join(problems[:5])}{' ...' if len(problems) > 5 else ''})"
        )
    model.load_state_dict(usable, strict=False)
    report.loaded = len(usable)
    return report


def load_initial(model: nn.Module, spec: str, head: str | None, wrapper: str = "net.") -> dict[str, Any]:
    """Load the weights at `spec` into `model` (see `load_into`; `head` None: the file's head is kept, and must
    fit) and say what was loaded. This project's own model file of a wrapped torchvision model holds its keys
    under the `wrapper` prefix, which is dropped."""
    weights = read_weights(spec)
    state = weights.state_dict
    if all(k.startswith(wrapper) for k in state):
        state = {k.removeprefix(wrapper): v for k, v in state.items()}
    report = load_into(model, state, "\0" if head is None else head, weights.origin)  # "\0": no key is under it
    return {"weights": weights.origin, **report.as_dict()}
