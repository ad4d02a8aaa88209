"""The attention decoder: the CRNN encoder of lifecycle.sequence, then a GRU with additive (Bahdanau) attention
over the frames, one character per step; its greedy reading and its loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lifecycle.sequence import BLANK, SequenceEncoder, best_paths, masked_mean, sequence_outputs


class AttentionRecognizer(nn.Module):
    """The same encoder, and a GRU decoder with additive (Bahdanau) attention over the frames: one character
    per step, ending with BLANK as end-of-text. Teacher-forced when `targets` are given, greedy otherwise."""

    def __init__(self, num_chars: int, height: int, width: int = 24, hidden: int = 96, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = SequenceEncoder(height, width, hidden)
        f = self.encoder.features
        self.embedding = nn.Embedding(num_chars + 2, hidden)  # + end (0) and start (num_chars + 1)
        self.start = num_chars + 1
        self.key = nn.Linear(f, hidden)
        self.query = nn.Linear(hidden, hidden, bias=False)
        self.energy = nn.Linear(hidden, 1, bias=False)
        self.cell = nn.GRUCell(hidden + f, hidden)
        self.init = nn.Linear(f, hidden)
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden + f, num_chars + 1))

    def forward(
        self, images: torch.Tensor, widths: torch.Tensor, targets: list[torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        frames, lengths = self.encoder(images, widths)
        valid = torch.arange(frames.shape[1], device=frames.device)[None, :] < lengths[:, None]
        keys = self.key(frames)
        pooled = masked_mean(frames, lengths)
        state = torch.tanh(self.init(pooled))
        previous = torch.full((frames.shape[0],), self.start, dtype=torch.long, device=frames.device)
        teacher = None if targets is None else _teacher(targets, frames.device)
        steps = teacher.shape[1] if teacher is not None else int(lengths.max()) if len(lengths) else 0
        logits, finished = [], torch.zeros_like(previous, dtype=torch.bool)
        for step in range(steps):
            scores = self.energy(torch.tanh(keys + self.query(state)[:, None, :])).squeeze(-1)
            weights = scores.float().masked_fill(~valid, float("-inf")).softmax(-1).to(frames.dtype)
            context = torch.bmm(weights[:, None, :], frames).squeeze(1)
            state = self.cell(torch.cat([self.embedding(previous), context], -1), state)
            logits.append(self.out(torch.cat([state, context], -1)))
            if teacher is not None:
                previous = teacher[:, step]
                continue
            previous = logits[-1].argmax(-1)
            finished |= (previous == BLANK) | (step + 1 >= lengths)
            if bool(finished.all()):
                break
        out = torch.stack(logits, 1) if logits else frames.new_zeros(frames.shape[0], 0, self.out[-1].out_features)
        decoded = _decoded_steps(out, lengths) if teacher is None else torch.full_like(lengths, out.shape[1])
        return sequence_outputs(out, decoded, pooled)


def _teacher(targets: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """B x (longest + 1) character indices, each line followed by its end (BLANK) and padded with BLANK."""
    longest = max((len(t) for t in targets), default=0)
    out = torch.full((len(targets), longest + 1), BLANK, dtype=torch.long, device=device)
    for i, t in enumerate(targets):
        out[i, : len(t)] = t
    return out


def _decoded_steps(logits: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Steps up to and including each line's first end-of-text, and never more than it has frames."""
    ends = logits.argmax(-1) == BLANK
    first_end = torch.where(ends.any(1), ends.int().argmax(1) + 1, torch.full_like(frames, logits.shape[1]))
    return torch.minimum(first_end, frames.clamp(min=0))


def greedy_attention(outputs: dict[str, torch.Tensor]) -> list[tuple[list[int], float]]:
    """Each line's characters up to its end of text, and the probability of the chosen steps (the end included)."""
    return [(path[: path.index(BLANK)] if BLANK in path else path, p) for path, p in best_paths(outputs)]


def attention_loss(
    outputs: dict[str, torch.Tensor], targets: list[torch.Tensor], label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy of the decoder's steps against each line's characters and its end; padding ignored. In
    evaluation the decoder runs free and may stop early or late: missing steps count as uniform guesses."""
    teacher = _teacher(targets, outputs["logits"].device)
    steps = torch.arange(teacher.shape[1], device=teacher.device)[None, :]
    lengths = torch.tensor([len(t) for t in targets], device=teacher.device)
    teacher = teacher.masked_fill(steps > lengths[:, None], -100)
    logits = outputs["logits"].float()[:, : teacher.shape[1]]
    logits = F.pad(logits, (0, 0, 0, teacher.shape[1] - logits.shape[1]))
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), teacher.reshape(-1), ignore_index=-100, label_smoothing=label_smoothing
    )
