"""Sequence recognition shared by the text tasks (OCR reads a line image, ASR a log-mel spectrogram, both as a
1 x height x width picture read along its width): a CRNN encoder whose answers do not depend on batching, CTC
loss and greedy decoding, and the CER/WER metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Protocol, cast

import torch
import torch.nn.functional as F
from pydantic import AfterValidator, Field
from torch import nn


def _halvable(height: int) -> int:
    if height % 16:
        raise ValueError(f"must be a multiple of 16 (the encoder halves the height four times), got {height}")
    return height


EncoderHeight = Annotated[int, Field(ge=16), AfterValidator(_halvable)]  # the rows SequenceEncoder reads
STRIDE = 4  # input columns per encoder frame: input widths are made multiples of it
BLANK = 0  # the CTC blank (and an attention decoder's end of text); characters are 1..len(charset)


def width_mask(x: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """Zero every column of the B x C x H x W activations at or beyond each input's width (zero is what the
    convolutions' padding shows an unbatched input there)."""
    columns = torch.arange(x.shape[-1], device=x.device)
    return x * (columns[None, :] < widths[:, None]).to(x.dtype)[:, None, None, :]


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(c_out)
        self.stride = stride

    def forward(self, x: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        widths = widths // self.stride
        return width_mask(F.relu(self.norm(self.conv(x)), inplace=True), widths), widths


class SequenceEncoder(nn.Module):
    """1 x height x W inputs (W a multiple of STRIDE) -> W/4 frames of 2*hidden features. A strided stem and a
    pooling halve the width twice; the height is halved four times and its remaining rows feed a bidirectional
    LSTM along the width."""

    def __init__(self, height: int, width: int = 24, hidden: int = 96) -> None:
        super().__init__()
        w = width
        self.blocks = nn.ModuleList(
            [ConvBlock(1, w, stride=2), ConvBlock(w, 2 * w), ConvBlock(2 * w, 4 * w), ConvBlock(4 * w, 4 * w)]
        )
        self.pools = (None, (2, 2), (2, 1), (2, 1))  # after each block
        self.forward_rnn = nn.LSTM(4 * w * (height // 16), hidden, batch_first=True)
        self.backward_rnn = nn.LSTM(4 * w * (height // 16), hidden, batch_first=True)
        self.features = 2 * hidden
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stubs; what oneDNN's CPU convolutions prefer

    def forward(self, images: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B x T x features frames, B frame counts)."""
        x = images.contiguous(memory_format=torch.channels_last)
        for block, pool in zip(self.blocks, self.pools):
            x, widths = block(x, widths)
            if pool is not None:
                x, widths = F.max_pool2d(x, pool), widths // pool[1]
        b, c, h, t = x.shape
        x = x.permute(0, 3, 1, 2).reshape(b, t, c * h)
        # A bidirectional LSTM in two passes, each over the frames in its own direction with the padding last, so
        # that no frame's state ever depends on padding (and no packing: three times slower on CPU).
        backward = reverse_frames(self.backward_rnn(reverse_frames(x, widths))[0], widths)
        return torch.cat([self.forward_rnn(x)[0], backward], -1), widths


def reverse_frames(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each sequence of the B x T x F batch reversed within its length; the padding after it stays in place."""
    steps = torch.arange(x.shape[1], device=x.device)[None, :].expand(x.shape[0], -1)
    lengths = lengths.to(x.device)[:, None]
    order = torch.where(steps < lengths, lengths - 1 - steps, steps)
    return x.gather(1, order[..., None].expand(-1, -1, x.shape[2]))


def sequence_outputs(logits: torch.Tensor, lengths: torch.Tensor, features: torch.Tensor) -> dict[str, torch.Tensor]:
    """What a recogniser returns: `logits` B x S x (1 + charset) per step over blank/end and the characters,
    `lengths` the valid steps of each input (CTC: its frames; attention: its decoded steps), `features` the mean
    of each input's encoder frames (its embedding)."""
    return {"logits": logits, "lengths": lengths, "features": features}


def masked_mean(frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    mask = (torch.arange(frames.shape[1], device=frames.device)[None, :] < lengths[:, None]).to(frames.dtype)
    return (frames * mask[..., None]).sum(1) / lengths.clamp(min=1)[:, None].to(frames.dtype)


class CTCModel(nn.Module):
    """A frame encoder + CTC: a class (or blank) per frame; greedy decoding collapses repeats and drops blanks. The
    encoder takes (B x 1 x height x W inputs, B widths) to (B x W/STRIDE x `features` frames, B frame counts)."""

    def __init__(self, encoder: nn.Module, num_chars: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(cast(int, encoder.features), num_chars + 1))

    def forward(
        self, images: torch.Tensor, widths: torch.Tensor, targets: list[torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        frames, lengths = self.encoder(images, widths)
        return sequence_outputs(self.head(frames), lengths, masked_mean(frames, lengths))


class CTCRecognizer(CTCModel):
    """CRNN + CTC."""

    def __init__(self, num_chars: int, height: int, width: int = 24, hidden: int = 96, dropout: float = 0.1) -> None:
        super().__init__(SequenceEncoder(height, width, hidden), num_chars, dropout)


def pad_to_widest(inputs: Sequence[torch.Tensor], height: int) -> dict[str, torch.Tensor]:
    """1 x height x W_i inputs as one B x 1 x height x max(W) batch padded with zeros (what the network's masking
    shows beyond an input), with each input's width."""
    widths = torch.tensor([x.shape[-1] for x in inputs], dtype=torch.long)
    images = torch.zeros(len(inputs), 1, height, int(widths.max()) if len(inputs) else STRIDE)
    for i, x in enumerate(inputs):
        images[i, :, :, : x.shape[-1]] = x
    return {"images": images, "widths": widths}


def emitting_frames(path: Sequence[int]) -> list[int]:
    """The frames of a CTC best path that emit a character: not blank, and not a repeat of the frame before."""
    return [j for j, c in enumerate(path) if c != BLANK and (j == 0 or c != path[j - 1])]


def greedy_ctc(outputs: dict[str, torch.Tensor]) -> list[tuple[list[int], float]]:
    """Each input's characters (1-based indices): the best class per frame, repeats collapsed, blanks dropped;
    and the probability of that best path."""
    return [([path[j] for j in emitting_frames(path)], p) for path, p in best_paths(outputs)]


def best_paths(outputs: dict[str, torch.Tensor]) -> list[tuple[list[int], float]]:
    """Each input's most probable output per valid step, and the product of those probabilities."""
    best, index = outputs["logits"].float().softmax(-1).max(-1)
    return [
        (index[i, :n].tolist(), float(best[i, :n].log().sum().exp()) if n else 0.0)
        for i, n in enumerate(outputs["lengths"].tolist())
    ]


def ctc_loss(outputs: dict[str, torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
    log_probs = outputs["logits"].float().log_softmax(-1).transpose(0, 1)  # T x B x C
    flat = torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long)
    target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    return F.ctc_loss(log_probs, flat, outputs["lengths"].cpu(), target_lengths, blank=BLANK, zero_infinity=True)


class Reader(Protocol):
    """What the text metrics need of a task: its reading of a batch's outputs, and a target's text."""

    def read(self, outputs: Any) -> list[tuple[str, float]]: ...

    def text_of(self, target: torch.Tensor) -> str: ...


def text_metrics() -> type:
    """The Metric class, built on first use (torchmetrics takes seconds to import)."""
    from torchmetrics import Metric
    from torchmetrics.text import CharErrorRate, WordErrorRate

    class TextMetrics(Metric):
        """Character error rate (edits / truth characters), word error rate and the share of inputs read exactly,
        from one decoding of each batch."""

        full_state_update = False
        exact: torch.Tensor  # states, set by add_state
        inputs: torch.Tensor

        def __init__(self, task: Reader) -> None:
            super().__init__()
            self.task = task
            self.cer, self.wer = CharErrorRate(), WordErrorRate()
            self.add_state("exact", torch.tensor(0), dist_reduce_fx="sum")
            self.add_state("inputs", torch.tensor(0), dist_reduce_fx="sum")

        def update(self, outputs: dict[str, torch.Tensor], targets: list[torch.Tensor]) -> None:
            read = [text for text, _ in self.task.read(outputs)]
            truth = [self.task.text_of(t) for t in targets]
            self.cer.update(read, truth)
            self.wer.update(read, truth)
            self.exact += sum(r == t for r, t in zip(read, truth))
            self.inputs += len(truth)

        def compute(self) -> dict[str, torch.Tensor]:
            return {
                "cer": self.cer.compute(),
                "wer": self.wer.compute(),
                "exact_match": self.exact.float() / self.inputs.clamp(min=1),
            }

        def reset(self) -> None:
            super().reset()
            self.cer.reset()
            self.wer.reset()

    return TextMetrics
