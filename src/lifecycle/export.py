"""A trained model out of the project: ONNX (through torch.export and onnxscript) or a torch.export program
(`.pt2`), with its pre/post-processing contract written beside it as JSON."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from lifecycle.atomic import atomic_path, write_json
from lifecycle.data import rows_of_split
from lifecycle.models import load_model
from lifecycle.paths import TaskPaths
from lifecycle.tasks import Task
from lifecycle.tasks.parts import Network
from lifecycle.weights import CONTRACT_SUFFIX

Format = Literal["onnx", "pt2"]


class NotExportable(ValueError):
    """The task's model cannot be exported in this format (the message says why)."""


class Exported(nn.Module):
    """The task's forward pass as the exported graph: the batched model inputs in, the raw outputs out (those the
    task's post-processing reads)."""

    def __init__(self, network: Network, model: nn.Module) -> None:
        super().__init__()
        self.network, self.model = network, model

    def forward(self, inputs: Any) -> Any:
        outputs = self.network.forward(self.model, inputs).outputs
        return {k: v for k, v in outputs.items() if k != "features"} if isinstance(outputs, dict) else outputs


def example_inputs(task: Task, paths: TaskPaths, count: int = 2) -> Any:
    """A batch of real test-split inputs prepared the way serving prepares them."""
    rows = rows_of_split(paths.split_manifest, "test")[:count]
    codec = task.codec
    return codec.batch_inputs([codec.prepare(codec.load_input(paths.raw / row["path"])) for row in rows])


def dynamic_dims(inputs: Any, batch_only: bool) -> Any:
    """Dimensions of every input tensor left for torch.export to infer: all of them (the batch, a text line's
    width; what the network fixes becomes static), or the batch only."""
    from torch.export import Dim
    from torch.utils._pytree import tree_map

    return tree_map(lambda t: dict.fromkeys(range(1 if batch_only else t.ndim), Dim.AUTO), inputs)


def export_program(module: nn.Module, inputs: Any) -> Any:
    """torch.export's program of `module`, every dimension dynamic where the graph allows it, else the batch only
    (the other shapes are then those of the example, which the contract records)."""
    try:
        return torch.export.export(module, (inputs,), dynamic_shapes=(dynamic_dims(inputs, batch_only=False),))
    except RuntimeError:
        return torch.export.export(module, (inputs,), dynamic_shapes=(dynamic_dims(inputs, batch_only=True),))


def contract(task: Task, fmt: Format, inputs: Any) -> dict[str, Any]:
    """What a consumer of the exported file must do before and after it: this project's model section
    (input size, channels, resize, normalisation) and the class names, with the example's input shapes."""
    shapes = {k: list(v.shape) for k, v in inputs.items()} if isinstance(inputs, dict) else list(inputs.shape)
    return {
        "task": task.name,
        "format": fmt,
        "input_shapes": shapes,
        "model": task.cfg.model.model_dump(mode="json"),
        "normalize": task.cfg.model.model_dump(mode="json").get("normalize"),
        "classes": task.source.label_set(),
    }


def export(model_file: Path, paths: TaskPaths, fmt: Format, out: Path) -> Path:
    """Write the model in `model_file` to `out` and its contract beside it; returns the contract's path. Raises
    NotExportable naming why when the model's graph cannot be exported."""
    task, model, _ = load_model(model_file)
    if fmt == "onnx" and importlib.util.find_spec("onnxscript") is None:
        raise NotExportable("ONNX export needs the onnx and onnxscript packages, which are not installed")
    inputs = example_inputs(task, paths)
    if loose := [k for k, v in inputs.items() if not isinstance(v, torch.Tensor)] if isinstance(inputs, dict) else []:
        raise NotExportable(
            f"{task.name} ({model_file}) cannot be exported as {fmt}: its batch holds Python values besides tensors "
            f"({', '.join(loose)}: the network branches on them in Python), which an exported graph cannot take"
        )
    module = Exported(task.network, model).eval()
    try:
        with torch.no_grad():
            program = export_program(module, inputs)
            with atomic_path(out) as tmp:
                if fmt == "pt2":
                    torch.export.save(program, tmp)
                else:
                    torch.onnx.export(program, (inputs,), str(tmp), dynamo=True, optimize=True, verbose=False)
    except (RuntimeError, torch._dynamo.exc.Unsupported, NotImplementedError) as e:
        first = str(e).strip().splitlines()[0][:300]
        raise NotExportable(f"{task.name} ({model_file}) cannot be exported as {fmt}: {first}") from None
    path = out.with_name(out.name + CONTRACT_SUFFIX)
    write_json(path, contract(task, fmt, inputs))
    return path
