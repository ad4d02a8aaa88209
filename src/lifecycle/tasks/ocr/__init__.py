"""Task `ocr`: text-line recognition (default data: lines rendered with the fonts inside installed Python packages,
the test split in font families training never sees; bring your own as a folder with a `labels.tsv`).

Two models share one line encoder (a CRNN: convolutions, then a bidirectional LSTM along the line): CTC (one
output per frame, aligned by the loss) and an attention decoder (one character per step, teacher-forced in
training), chosen by `model.decoder`.
A line is resized to the model's height, its width kept in proportion (rounded to the encoder's stride) up to
`model.max_width`; a batch pads lines to its widest and the network masks the padding, so an answer never
depends on the batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lifecycle.tasks import register_task
from lifecycle.tasks.ocr.codec import OcrCodec
from lifecycle.tasks.ocr.config import OcrCollect, OcrModel
from lifecycle.tasks.ocr.network import OcrNetwork
from lifecycle.tasks.ocr.outputs import OcrOutputs
from lifecycle.tasks.ocr.reports import OcrReports
from lifecycle.tasks.ocr.source import OcrSource
from lifecycle.tasks.parts import Goal, ModelCardText, Parts, Schemas, TaskSpec
from lifecycle.tasks.shared import ImageMonitoring, TextLabeling


class OcrMonitoring(ImageMonitoring):
    def descriptors(self, raw_inputs: Sequence[torch.Tensor]) -> list[dict[str, float]]:
        return [{**d, "aspect_ratio": d["width"] / max(d["height"], 1.0)} for d in super().descriptors(raw_inputs)]

    def monitored(self, prediction: dict[str, Any]) -> dict[str, str | float]:
        return {"confidence": float(prediction["confidence"]), "text_length": float(len(prediction["text"]))}


class OcrLabeling(TextLabeling):
    media, field, text_name = "Image", "image", "text"


def parts(cfg: Any) -> Parts:
    codec, outputs = OcrCodec(cfg), OcrOutputs(cfg)
    return Parts(
        source=OcrSource(cfg),
        codec=codec,
        network=OcrNetwork(cfg, outputs),
        outputs=outputs,
        monitoring=OcrMonitoring(cfg, codec),
        reports=OcrReports(cfg, codec),
        labeling=OcrLabeling(cfg),
    )


SPEC = register_task(
    TaskSpec(
        name="ocr",
        endpoint="read_text",
        goal=Goal("cer", higher_is_better=False),
        schemas=Schemas(collect=OcrCollect, model=OcrModel),
        build_parts=parts,
        capabilities=frozenset({"labeling", "onnx", "variable_size"}),
        card=ModelCardText(
            does="Reads the text of one line image: the string and a confidence.",
            inputs="One image of a single horizontal line of text (any format Pillow reads), scaled to 32 px high.",
            known_limits=(
                (
                    "Trained only on lines rendered with the fonts inside installed Python packages (and Pillow's font): "
                    "never on handwriting, scanned documents or photographs of text."
                ),
                (
                    "Reads only the characters of ocr.collect.charset; anything else (accents, other scripts) comes "
                    "out as something else."
                ),
                "One line per image: a page or a paragraph is not split into lines.",
            ),
        ),
    )
)
