"""torchvision's architectures by name: listing the builders, building one, finding its classification head, and
checking without memory or compute that it takes a given input size (parameters on the `meta` device)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

BUILTIN = "builtin"


def classification_builders() -> list[str]:
    """The names of torchvision's image classification builders (`resnet18`, `vit_b_16`, ...)."""
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def size_kwargs(name: str, input_size: int) -> dict[str, Any]:
    """The builder arguments that set the input size, for the architectures whose shapes depend on it."""
    if name.startswith("vit_"):
        return {"image_size": input_size}
    if name.startswith("maxvit_"):
        return {"input_size": (input_size, input_size)}
    return {}


def build_classifier(name: str, num_classes: int, input_size: int) -> nn.Module:
    """A freshly initialised torchvision classifier (never downloads: no weights are named)."""
    from torchvision.models import get_model

    with warnings.catch_warnings():  # googlenet and inception warn about a future change of their default init
        warnings.simplefilter("ignore", FutureWarning)
        return get_model(name, weights=None, num_classes=num_classes, **size_kwargs(name, input_size))


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside hold their parameters and buffers on the `meta` device: shapes without memory. Unlike
    `torch.device('meta')`, computations during construction (regnet derives its widths with tensors) still run."""
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        meta = None if param is None else nn.Parameter(param.to("meta"), param.requires_grad)
        register_parameter(module, name, meta)

    def buffer(module: nn.Module, name: str, tensor: torch.Tensor | None, persistent: bool = True) -> None:
        register_buffer(module, name, None if tensor is None else tensor.to("meta"), persistent)

    nn.Module.register_parameter, nn.Module.register_buffer = parameter, buffer  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = register_parameter, register_buffer  # type: ignore[method-assign]


def check_classifier(name: str, num_classes: int, input_size: int) -> None:
    """Raise ValueError naming the constraint when builder `name` cannot classify 3 x input_size² images."""
    if name not in classification_builders():
        raise ValueError(f"unknown architecture '{name}': choose '{BUILTIN}' or a torchvision classification builder")
    try:
        with parameters_on_meta():
            model = build_classifier(name, num_classes, input_size)
        logits = logits_of(model.eval()(torch.empty(2, 3, input_size, input_size, device="meta")))
    except (RuntimeError, ValueError, AssertionError) as e:
        raise ValueError(f"{name} cannot take {input_size}x{input_size} inputs: {str(e).strip()}") from None
    if tuple(logits.shape) != (2, num_classes):
        raise ValueError(f"{name} gives outputs of shape {tuple(logits.shape)} for {input_size}px inputs")


def logits_of(output: Any) -> torch.Tensor:
    """The main logits of a classifier's output (inception and googlenet add auxiliary logits when training)."""
    return output if isinstance(output, torch.Tensor) else output[0]


def find_head(model: nn.Module, num_classes: int) -> str:
    """The qualified name of the last layer producing `num_classes` outputs: the classification head (a Linear
    for most architectures, a 1x1 convolution for squeezenet)."""
    heads = [
        name
        for name, module in model.named_modules()
        if (isinstance(module, nn.Linear) and module.out_features == num_classes)
        or (isinstance(module, nn.Conv2d) and module.out_channels == num_classes and module.kernel_size == (1, 1))
    ]
    aux = ("aux", "AuxLogits")
    heads = [h for h in heads if not any(a in h for a in aux)]
    if not heads:
        raise ValueError(f"no layer with {num_classes} outputs: cannot find the classification head")
    return heads[-1]
