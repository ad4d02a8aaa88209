"""torchvision's architectures by name: listing the builders, building one, finding its classification head, and
checking without memory or compute that it takes a given input size (parameters on the `meta` device); the same
for its detection builders, set up for a fixed square input size and the pipeline's ranking of detections."""

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


# The keyword arguments each detection family takes for: the score below which nothing is returned, the
# non-maximum suppression IoU, and the most detections per image.
DETECTION_LIMITS = {
    "fasterrcnn": ("box_score_thresh", "box_nms_thresh", "box_detections_per_img"),
    "maskrcnn": ("box_score_thresh", "box_nms_thresh", "box_detections_per_img"),
    "retinanet": ("score_thresh", "nms_thresh", "detections_per_img"),
    "fcos": ("score_thresh", "nms_thresh", "detections_per_img"),
    "ssd": ("score_thresh", "nms_thresh", "detections_per_img"),  # ssd300_vgg16 and ssdlite320_mobilenet_v3_large
}
MIN_RANKED_SCORE = 0.01  # detections are returned down to this score: mAP ranks them all
SET_BY_THE_PIPELINE = frozenset(
    {"weights", "weights_backbone", "num_classes", "min_size", "max_size", *sum(DETECTION_LIMITS.values(), ())}
)


def _family(name: str) -> str | None:
    return next((f for f in DETECTION_LIMITS if name.startswith(f)), None)


def detection_builders() -> dict[str, bool]:
    """torchvision's box detection builders by name -> whether the architecture also answers instance masks
    (keypoint R-CNN, which needs keypoints to train, is left out)."""
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models.detection)
    return {name: name.startswith("maskrcnn") for name in names if _family(name) is not None}


def build_detector(
    name: str, num_classes: int, input_size: int, nms_iou: float, max_objects: int, extra: dict[str, Any]
) -> nn.Module:
    """A freshly initialised torchvision detector (never downloads: no weights, no backbone weights) whose own
    transform takes input_size² images as they are, returning up to `max_objects` detections per image, down to a
    score of MIN_RANKED_SCORE, after non-maximum suppression at `nms_iou`. `num_classes` counts the background."""
    from torchvision.models import get_model
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    family = _family(name)
    if name not in detection_builders() or family is None:
        choices = ", ".join(detection_builders())
        raise ValueError(f"unknown architecture '{name}': choose '{BUILTIN}' or a torchvision detector ({choices})")
    reserved = sorted(SET_BY_THE_PIPELINE & set(extra))
    if reserved:
        raise ValueError(
            f"{', '.join(reserved)}: set by the pipeline (model.input_size, nms_iou, max_objects, weights)"
        )
    score, nms, per_image = DETECTION_LIMITS[family]
    limits = {score: MIN_RANKED_SCORE, nms: nms_iou, per_image: max_objects}
    net = get_model(name, weights=None, weights_backbone=None, num_classes=num_classes, **limits, **extra)
    own = net.transform  # keeps its normalisation; resizes nothing (SSD's fixed 300 or 320 px become input_size)
    fixed = (input_size, input_size) if own.fixed_size is not None else None
    net.transform = GeneralizedRCNNTransform(
        input_size, input_size, own.image_mean, own.image_std, size_divisible=own.size_divisible, fixed_size=fixed
    )
    return net


def check_detector(name: str, extra: dict[str, Any]) -> None:
    """Raise ValueError naming the problem when builder `name` does not build with the keyword arguments `extra`,
    or would ignore some (the detectors pass unknown ones on to their transform, which drops them)."""
    import inspect

    from torchvision.models import get_model_builder

    try:
        with parameters_on_meta():
            net = build_detector(name, 2, 64, 0.5, 10, extra)
    except TypeError as e:  # an argument the builder does not take
        raise ValueError(f"{name} does not take them: {e}") from None
    inits = [vars(cls)["__init__"] for cls in type(net).__mro__ if "__init__" in vars(cls)]
    accepted = {p for f in (get_model_builder(name), *inits) for p in inspect.signature(f).parameters}
    unknown = sorted(set(extra) - accepted - {"self", "backbone", "kwargs"})
    if unknown:
        raise ValueError(f"{name} does not take them: {', '.join(unknown)} would be ignored")
