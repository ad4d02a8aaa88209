"""classify in Label Studio: one choice per image; a reviewed image lands in its class folder."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from lifecycle.atomic import write_bytes
from lifecycle.tasks.parts import Labeling, Landing


class ClassifyLabeling(Labeling):
    reads = ("collect",)

    def interface(self) -> str:
        choices = "".join(f"<Choice value={quoteattr(c)}/>" for c in self.cfg.collect.classes)
        return (
            f'<View><Image name="image" value="$image"/><Choices name="label" toName="image" choice="single">'
            f"{choices}</Choices></View>\n"
        )

    def to_label_studio(self, prediction: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [prediction["label"]]}}
        ]

    def from_label_studio(self, result: Any, data: bytes) -> str:
        choices = [r for r in result or [] if isinstance(r, dict) and r.get("type") == "choices"]
        if len(choices) != 1 or len(choices[0].get("value", {}).get("choices") or []) != 1:
            raise ValueError(f"expected one 'choices' result with one class, got {json.dumps(result)[:200]}")
        return str(choices[0]["value"]["choices"][0])

    def land(self, incoming: Path, samples: Sequence[Landing]) -> list[Path]:
        """Each image in its class folder."""
        written = []
        for sample in samples:
            target = incoming / str(sample.label) / sample.name
            if not target.exists():
                write_bytes(target, sample.data)
                written.append(target)
        return written
