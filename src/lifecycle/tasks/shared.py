"""Parts that several tasks share."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from lifecycle.imaging import IMAGE_SHIFTS, encode_png_tensor, image_descriptors, shift_image
from lifecycle.tasks.parts import Codec, Labeling, Landing, Monitoring

if TYPE_CHECKING:
    import numpy as np


def scored(text_key: str) -> dict[str, Any]:
    """The JSON schema of an answer holding a string and its confidence in [0, 1]."""
    return {
        "type": "object",
        "required": [text_key, "confidence"],
        "properties": {text_key: {"type": "string"}, "confidence": {"type": "number", "minimum": 0, "maximum": 1}},
    }


class ImageMonitoring(Monitoring):
    """Image descriptors (size, intensity, sharpness) and the image shifts, decoded the task's own way."""

    shifts = IMAGE_SHIFTS

    def __init__(self, cfg: Any, codec: Codec) -> None:
        super().__init__(cfg)
        self.codec = codec

    def descriptors(self, raw_inputs: Sequence[torch.Tensor]) -> list[dict[str, float]]:
        return image_descriptors(raw_inputs)

    def shift(self, data: bytes, kind: str, rng: np.random.Generator) -> bytes:
        return encode_png_tensor(shift_image(self.codec.decode(data), kind, rng))


class TextLabeling(Labeling):
    """A text answer (a line's reading, a clip's transcript) reviewed in a TextArea pre-filled with the model's
    answer; reviewed samples land as files under `reviewed/` listed in the landing zone's `labels.tsv`."""

    reads = ()
    media: ClassVar[str]  # the Label Studio object tag of the input: Image, Audio
    field: ClassVar[str]  # the input's name, the codec's input field
    text_name: ClassVar[str]

    def interface(self) -> str:
        return (
            f'<View><{self.media} name="{self.field}" value="${self.field}"/>'
            f'<TextArea name="{self.text_name}" toName="{self.field}" editable="true" maxSubmissions="1" '
            f'showSubmitButton="false"/></View>\n'
        )

    def to_label_studio(self, prediction: dict[str, Any]) -> list[dict[str, Any]]:
        text = prediction["text"]
        value = {"text": [text]}
        return (
            [{"from_name": self.text_name, "to_name": self.field, "type": "textarea", "value": value}] if text else []
        )

    def from_label_studio(self, result: Any, data: bytes) -> str:
        areas = [r for r in result or [] if isinstance(r, dict) and r.get("type") == "textarea"]
        if len(areas) != 1 or areas[0].get("from_name") != self.text_name:
            raise ValueError(f"expected one 'textarea' result from '{self.text_name}', got {json.dumps(result)[:200]}")
        texts = (areas[0].get("value") or {}).get("text")
        if not (isinstance(texts, list) and len(texts) == 1 and isinstance(texts[0], str)):
            raise ValueError(f"expected one text in the '{self.text_name}' textarea, got {texts!r}")
        text = texts[0].strip()
        if any(c in text for c in "\t\r\n"):
            raise ValueError(f"the text must be one line without tabs, got {text!r}")
        return text

    def land(self, incoming: Path, samples: Sequence[Landing]) -> list[Path]:
        from lifecycle.sources.folders import add_tsv_labeled_files

        return add_tsv_labeled_files(incoming, [(f"reviewed/{s.name}", s.data, s.label) for s in samples])
