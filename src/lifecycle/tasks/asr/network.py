"""asr's model: the OCR task's CRNN reading a spectrogram like a text line or a Conformer encoder (`model.arch`),
character-level CTC, and the character and word error rates. Inputs too long for one pass are decoded in
overlapping chunks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lifecycle.sequence import CTCModel, CTCRecognizer, ctc_loss, text_metrics
from lifecycle.tasks.asr.streaming import _padded, chunks, streamed_outputs
from lifecycle.tasks.parts import Forward, Network

if TYPE_CHECKING:  # torchmetrics takes seconds to import; stages that never compute metrics skip it
    from torchmetrics import MetricCollection

    from lifecycle.tasks.asr.outputs import AsrOutputs


class AsrNetwork(Network):
    reads = ("collect", "model")

    def __init__(self, cfg: Any, outputs: AsrOutputs) -> None:
        super().__init__(cfg)
        self.outputs = outputs

    def build(self) -> nn.Module:
        m, chars = self.cfg.model, len(self.cfg.collect.charset())
        if m.arch == "conformer":
            from lifecycle.tasks.asr.conformer import ConformerEncoder

            return CTCModel(ConformerEncoder(m.n_mels, m.conformer, m.dropout), chars, m.dropout)
        return CTCRecognizer(chars, m.n_mels, m.width, m.hidden, m.dropout)

    def forward(self, model: nn.Module, inputs: dict[str, Any]) -> Forward:
        outputs = self._outputs(model, inputs)
        return Forward(outputs, outputs["features"])

    def _outputs(self, model: nn.Module, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The batch's outputs: the whole inputs in one pass, each long one streamed, put back in order."""
        if not inputs["long"]:
            return model(inputs["images"], inputs["widths"])
        parts: dict[int, dict[str, torch.Tensor]] = {}
        if inputs["whole"]:
            batch = model(inputs["images"], inputs["widths"])
            parts = {i: {k: v[[row]] for k, v in batch.items()} for row, i in enumerate(inputs["whole"])}
        s = self.cfg.model.streaming
        for i, spec in inputs["long"].items():
            parts[i] = streamed_outputs(model, chunks(spec, *s.window()))
        return _padded([parts[i] for i in range(inputs["count"])])

    def loss(self, outputs: dict[str, torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
        return ctc_loss(outputs, targets)

    def metrics(self) -> MetricCollection:
        from torchmetrics import MetricCollection

        return MetricCollection({"text": text_metrics()(self.outputs)})
