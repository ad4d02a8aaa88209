"""ocr's model: one CRNN line encoder with a CTC head or an attention decoder (`model.decoder`), its loss, and
the character and word error rates."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lifecycle.sequence import CTCRecognizer, ctc_loss, text_metrics
from lifecycle.tasks.ocr.attention import AttentionRecognizer, attention_loss
from lifecycle.tasks.ocr.outputs import OcrOutputs
from lifecycle.tasks.parts import Forward, Network

if TYPE_CHECKING:  # torchmetrics takes seconds to import; stages that never compute metrics skip it
    from torchmetrics import MetricCollection


class OcrNetwork(Network):
    reads = ("collect", "model")

    def __init__(self, cfg: Any, outputs: OcrOutputs) -> None:
        super().__init__(cfg)
        self.outputs = outputs

    def build(self) -> nn.Module:
        m = self.cfg.model
        network = CTCRecognizer if m.decoder == "ctc" else AttentionRecognizer
        return network(len(self.cfg.collect.charset), m.height, m.width, m.hidden, m.dropout)

    def forward(self, model: nn.Module, inputs: dict[str, Any]) -> Forward:
        outputs = model(inputs["images"], inputs["widths"], inputs.get("targets") if model.training else None)
        return Forward(outputs, outputs["features"])

    def loss(self, outputs: dict[str, torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
        if self.cfg.model.decoder == "ctc":
            return ctc_loss(outputs, targets)
        return attention_loss(outputs, targets, self.cfg.model.label_smoothing)

    def metrics(self) -> MetricCollection:
        from torchmetrics import MetricCollection

        return MetricCollection({"text": text_metrics()(self.outputs)})
