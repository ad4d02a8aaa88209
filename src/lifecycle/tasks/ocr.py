"""Task `ocr`: text-line recognition (default data: lines rendered with the fonts inside the matplotlib wheel, the
test split in font families training never sees; bring your own as a folder with a `labels.tsv`).

Two models share one line encoder (a CRNN: convolutions, then a bidirectional LSTM along the line): CTC (one
output per frame, aligned by the loss) and an attention decoder (one character per step, teacher-forced in
training), chosen by `model.decoder`.
A line is resized to the model's height, its width kept in proportion (rounded to the encoder's stride) up to
`model.max_width`; a batch pads lines to its widest and the network masks the padding, so an answer never
depends on the batch."""

from __future__ import annotations

import csv
import difflib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn
from torchvision.transforms.v2 import functional as TF

from lifecycle.atomic import atomic_path
from lifecycle.config import Strict
from lifecycle.imaging import IMAGE_SHIFTS, decode_gray, encode_png, image_descriptors, inspect_image, shift_image
from lifecycle.sequence import (BLANK, STRIDE, CTCRecognizer, EncoderHeight, SequenceEncoder, best_paths, ctc_loss,
                                 greedy_ctc, masked_mean, pad_to_widest, sequence_outputs, text_metrics)
from lifecycle.sources.textlines import DEFAULT_CHARSET, LineStyle
from lifecycle.tasks import register_task
from lifecycle.tasks.base import InvalidInput, InvalidSample, Label, RawSample, Rejected, Task

if TYPE_CHECKING:
    import pandas as pd
    from torchmetrics import MetricCollection

SPLITS = ("train", "val", "test")
DEFAULT_FAMILIES = {
    "train": ["DejaVu Sans", "DejaVu Sans Mono", "STIXGeneral", "cmr10", "cmb10", "cmti10", "cmtt10"],
    "val": ["cmss10", "Pillow"],
    "test": ["DejaVu Serif"],
}


class OcrCollect(Strict):
    charset: str = Field(DEFAULT_CHARSET, min_length=1, description="the characters a label may hold")
    embedded: bool = Field(True, description="render lines with the fonts shipped inside matplotlib (and Pillow's)")
    lines: int = Field(7_500, ge=1, description="rendered lines, shared out by the split ratios")
    seed: int = 0
    min_chars: int = Field(3, ge=1)
    max_chars: int = Field(16, ge=1)
    min_font_px: int = Field(18, ge=6)
    max_font_px: int = Field(34, ge=6)
    families: dict[str, list[str]] = Field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_FAMILIES.items()},
                                           description="the font families each split is rendered in (disjoint)")  # fmt: skip
    folder: Path | None = Field(None, description="your own lines: a folder with images and labels.tsv (path<TAB>text)")

    @field_validator("charset")
    @classmethod
    def _charset(cls, charset: str) -> str:
        if len(set(charset)) != len(charset):
            raise ValueError("characters must be unique")
        if any(c in "\t\n\r" for c in charset):
            raise ValueError("tab and line breaks cannot be characters: labels.tsv uses them as separators")
        return charset

    @model_validator(mode="after")
    def _families_render_the_charset(self) -> OcrCollect:
        from lifecycle.sources.textlines import missing_characters, text_faces

        if self.min_chars > self.max_chars or self.min_font_px > self.max_font_px:
            raise ValueError("min_chars/min_font_px must not exceed max_chars/max_font_px")
        if sorted(self.families) != sorted(SPLITS):
            raise ValueError(f"families: give the font families of each of {list(SPLITS)}, got {sorted(self.families)}")
        named = [name for names in self.families.values() for name in names]
        if len(set(named)) != len(named) or any(not names for names in self.families.values()):
            raise ValueError("families: every split needs its own families; a family in two splits leaks its glyphs")
        faces = text_faces()
        for split, names in self.families.items():
            for name in names:
                if name not in faces:
                    raise ValueError(f"families.{split}: no text font family '{name}' in matplotlib (or Pillow's "
                                     f"built-in 'Pillow'); available: {sorted(faces)}")  # fmt: skip
                for face in faces[name]:
                    if missing := missing_characters(face, self.charset):
                        raise ValueError(f"families.{split}: '{name}' ({face.style}) cannot render {missing!r}")
        return self

    def style(self) -> LineStyle:
        return LineStyle(self.min_chars, self.max_chars, self.min_font_px, self.max_font_px)


class OcrModel(Strict):
    decoder: Literal["ctc", "attention"] = Field("ctc", description="CTC over frames, or an attention decoder")
    height: EncoderHeight = Field(32, description="lines are resized to this height (a multiple of 16)")
    max_width: int = Field(1024, ge=16, description="widest accepted line once resized to `height`, in pixels")
    width: int = Field(24, ge=4, description="channels of the encoder's stem; x2 and x4 further in")
    hidden: int = Field(96, ge=8, description="LSTM units per direction (and the attention decoder's)")
    dropout: float = Field(0.1, ge=0, lt=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="attention decoder only")


# ---- networks -------------------------------------------------------------------------------------
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

    def forward(self, images: torch.Tensor, widths: torch.Tensor, targets: list[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
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


def attention_loss(outputs: dict[str, torch.Tensor], targets: list[torch.Tensor], label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of the decoder's steps against each line's characters and its end; padding ignored. In
    evaluation the decoder runs free and may stop early or late: missing steps count as uniform guesses."""
    teacher = _teacher(targets, outputs["logits"].device)
    steps = torch.arange(teacher.shape[1], device=teacher.device)[None, :]
    lengths = torch.tensor([len(t) for t in targets], device=teacher.device)
    teacher = teacher.masked_fill(steps > lengths[:, None], -100)
    logits = outputs["logits"].float()[:, : teacher.shape[1]]
    logits = F.pad(logits, (0, 0, 0, teacher.shape[1] - logits.shape[1]))
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), teacher.reshape(-1), ignore_index=-100,
                           label_smoothing=label_smoothing)  # fmt: skip


# ---- the task ---------------------------------------------------------------------------------------

def resized_width(width: int, height: int, model_height: int) -> int:
    """A line's width at the model's height, aspect kept, rounded to the encoder stride (at least one frame)."""
    return max(STRIDE, round(width * model_height / height / STRIDE) * STRIDE)


@dataclass(frozen=True)
class LineTransform:
    """uint8 1xHxW line -> float 1 x height x W' (W' in proportion, a multiple of the stride), augmented when
    training, then normalised per line: centred on its median (the paper), scaled by its spread, and turned so
    ink is positive whether the text is dark on light or light on dark."""

    height: int
    augment: Any = None

    def __call__(self, image: torch.Tensor, target: Any) -> tuple[torch.Tensor, Any]:
        width = resized_width(image.shape[-1], image.shape[-2], self.height)  # decode bounds it by max_width
        image = TF.resize(image, [self.height, width], antialias=True)
        if self.augment is not None:
            image = self.augment(image)
        return normalise_line(image.float()), target


def normalise_line(image: torch.Tensor) -> torch.Tensor:
    median = image.median()
    polarity = 1.0 if float(image.mean()) >= float(median) else -1.0
    return (image - median) * polarity / (image.std() + 8.0)


@register_task("ocr")
class Ocr(Task):
    endpoint = "read_text"
    primary_metric = "cer"
    higher_is_better = False
    CollectConfig = OcrCollect
    ModelConfig = OcrModel

    @property
    def charset(self) -> str:
        return self.cfg.collect.charset

    # ---- data -------------------------------------------------------------------------------------
    def collect(self, incoming: Path) -> Iterator[RawSample | Rejected]:
        from lifecycle.sources.folders import tsv_labeled_files
        from lifecycle.sources.textlines import rendered_lines

        c = self.cfg.collect
        if incoming.is_dir():
            yield from tsv_labeled_files(incoming, "incoming")
        if c.folder is not None:
            yield from tsv_labeled_files(Path(c.folder), "folder")
        if c.embedded:
            shares = self.cfg.split.model_dump()
            yield from rendered_lines(c.lines, c.families, shares, c.charset, c.seed, c.style())

    def inspect(self, data: bytes, label: Label) -> dict[str, Any]:
        if not isinstance(label, str) or not label.strip():
            raise InvalidSample("empty label: a line needs its text")
        if outside := sorted({c for c in label if c not in self.charset}):
            raise InvalidSample(f"characters outside the charset: {''.join(outside)!r} in {label!r}")
        try:
            meta = inspect_image(data)
        except ValueError as e:
            raise InvalidSample(str(e)) from None
        if problem := self.too_wide(meta["width"], meta["height"]):
            raise InvalidSample(problem)
        frames = resized_width(meta["width"], meta["height"], self.cfg.model.height) // STRIDE
        return {**meta, "chars": len(label), "frames": frames}

    def data_checks(self, rows: list[dict[str, Any]]) -> dict[str, tuple[pd.DataFrame, list[Any]]]:
        """Each line's text only from the charset, and no more characters than the encoder has frames for it
        (CTC emits at most one character per frame; a longer label cannot be learned)."""
        import re

        import great_expectations.expectations as gxe
        import pandas as pd

        lines = pd.DataFrame.from_records(
            [{"sample_id": r["sample_id"], "text": r["label"], "chars": r.get("chars"), "frames": r.get("frames")}
             for r in rows], columns=["sample_id", "text", "chars", "frames"])  # fmt: skip
        return {"lines": (lines, [
            gxe.ExpectColumnValuesToMatchRegex(column="text", regex=f"^[{re.escape(self.charset)}]+$"),
            gxe.ExpectColumnValuesToBeBetween(column="chars", min_value=1),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="frames", column_B="chars", or_equal=True),
        ])}  # fmt: skip

    # ---- model inputs -----------------------------------------------------------------------------
    def decode(self, data: bytes) -> torch.Tensor:
        image = decode_gray(data, self.cfg.validation.max_side)
        if problem := self.too_wide(image.shape[-1], image.shape[-2]):
            raise InvalidInput(problem)
        return image

    def too_wide(self, width: int, height: int) -> str | None:
        """Why a line of `width` x `height` pixels is too wide for the model once resized, or None."""
        m = self.cfg.model
        if (resized := resized_width(width, height, m.height)) <= m.max_width:
            return None
        return (f"line too wide: {width}x{height} pixels would be {resized} pixels wide at height {m.height}, more "
                f"than the {m.max_width} the model reads; send shorter lines")  # fmt: skip

    def encode_target(self, label: Label) -> torch.Tensor:
        return torch.tensor([self.charset.index(c) + 1 for c in label], dtype=torch.long)

    def transform(self, train: bool) -> LineTransform:
        m = self.cfg.model
        return LineTransform(m.height, self.cfg.train.augmentation() if train else None)

    def padded_size(self, raw_input: torch.Tensor) -> int:
        return resized_width(raw_input.shape[-1], raw_input.shape[-2], self.cfg.model.height)

    def batch_inputs(self, inputs: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Lines padded to the widest."""
        return pad_to_widest(inputs, self.cfg.model.height)

    def collate(self, items: Sequence[tuple[Any, Any]]) -> tuple[dict[str, Any], list[torch.Tensor]]:
        """Batches also carry the targets as an input: the attention decoder is teacher-forced in training."""
        inputs, targets = zip(*items)
        return {**self.batch_inputs(inputs), "targets": list(targets)}, list(targets)

    # ---- model ------------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        m = self.cfg.model
        network = CTCRecognizer if m.decoder == "ctc" else AttentionRecognizer
        return network(len(self.charset), m.height, m.width, m.hidden, m.dropout)

    def forward(self, model: nn.Module, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        return model(inputs["images"], inputs["widths"], inputs.get("targets") if model.training else None)

    def embed(self, model: nn.Module, inputs: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        outputs = self.forward(model, inputs)
        return outputs, outputs["features"]

    def loss(self, outputs: dict[str, torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
        if self.cfg.model.decoder == "ctc":
            return ctc_loss(outputs, targets)
        return attention_loss(outputs, targets, self.cfg.model.label_smoothing)

    def metrics(self) -> MetricCollection:
        from torchmetrics import MetricCollection

        return MetricCollection({"text": text_metrics()(self)})

    # ---- predictions ------------------------------------------------------------------------------
    def text_of(self, target: torch.Tensor) -> str:
        return "".join(self.charset[int(c) - 1] for c in target)

    def read(self, outputs: dict[str, torch.Tensor]) -> list[tuple[str, float]]:
        """Each line's text and the probability of the decoded path."""
        decoded = greedy_ctc(outputs) if self.cfg.model.decoder == "ctc" else greedy_attention(outputs)
        return [("".join(self.charset[c - 1] for c in chars), confidence) for chars, confidence in decoded]

    def predict(self, outputs: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        return [{"text": text, "confidence": confidence} for text, confidence in self.read(outputs)]

    def monitored(self, prediction: dict[str, Any]) -> dict[str, str | float]:
        return {"confidence": float(prediction["confidence"]), "text_length": float(len(prediction["text"]))}

    def descriptors(self, raw_input: torch.Tensor) -> dict[str, float]:
        d = image_descriptors(raw_input)
        return {**d, "aspect_ratio": d["width"] / max(d["height"], 1.0)}

    shifts = IMAGE_SHIFTS

    def shift(self, data: bytes, kind: str, rng: Any) -> bytes:
        return encode_png(shift_image(self.decode(data), kind, rng)[0].numpy())

    def report(self, predictions: list[dict[str, Any]], labels: list[Label], inputs: Sequence[Path],
               out_dir: Path, model: nn.Module | None = None) -> dict[str, Any]:  # fmt: skip
        """`test_lines.png` (the first test lines, truth and reading, errors in red) and `errors.csv` (every line
        read wrong, with its character edits)."""
        wrong = [(str(path), label, p["text"], p["confidence"]) for path, label, p in zip(inputs, labels, predictions)
                 if p["text"] != label]  # fmt: skip
        with atomic_path(out_dir / "errors.csv") as tmp, tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["input", "truth", "read", "confidence", "edits"])
            writer.writerows((path, truth, read, f"{conf:.4f}", edits(truth, read)) for path, truth, read, conf in wrong)
        _plot_lines([self.load_input(Path(p)) for p in inputs[:16]], labels[:16],
                    [p["text"] for p in predictions[:16]], out_dir / "test_lines.png")  # fmt: skip
        return {}

    def preview(self, samples: Sequence[tuple[torch.Tensor, Any]], path: Path) -> None:
        images = [x for x, _ in samples[:16]]
        texts = [self.text_of(y) for _, y in samples[:16]]
        _plot_lines([((x - x.min()) / (x.max() - x.min() + 1e-6) * 255) for x in images], texts, None, path)


def edits(truth: str, read: str) -> str:
    """The character edits turning the truth into the reading, e.g. `'l'->'I'@3 ''->'.'@9` (positions in the truth)."""
    ops = difflib.SequenceMatcher(a=truth, b=read, autojunk=False).get_opcodes()
    return " ".join(f"{truth[i1:i2]!r}->{read[j1:j2]!r}@{i1}" for tag, i1, i2, j1, j2 in ops if tag != "equal")


MONO_PT = 9  # the pictures' text size; DejaVu Sans Mono advances 0.602 em per character


def _plot_lines(images: Sequence[torch.Tensor], truths: Sequence[str], readings: Sequence[str] | None,
                path: Path) -> None:  # fmt: skip
    """One row per line: the image at its own aspect, then its truth, then (when given) the reading with wrong
    characters in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(images)
    fig, axes = plt.subplots(rows, 2, figsize=(10, 0.55 * rows + 0.6), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.3]})  # fmt: skip
    for ax_image, ax_text, image, truth, i in zip(axes[:, 0], axes[:, 1], images, truths, range(rows)):
        ax_image.imshow(image[0].float().numpy(), cmap="gray")
        ax_image.set_anchor("W")
        ax_image.set_axis_off()
        ax_text.set_axis_off()
        _monospace(ax_text, 0.68, truth, [False] * len(truth))
        if readings is not None:
            read = readings[i]
            right = np.zeros(len(read), dtype=bool)
            for block in difflib.SequenceMatcher(a=truth, b=read, autojunk=False).get_matching_blocks():
                right[block.b : block.b + block.size] = True
            _monospace(ax_text, 0.18, read or "∅", [not ok for ok in right] if read else [True])
    title = "truth / read (wrong characters in red; errors.csv lists every edit)" if readings is not None else "label"
    axes[0, 1].set_title(title, fontsize=9, loc="left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _monospace(ax: Any, y: float, text: str, wrong: Sequence[bool]) -> None:
    """`text` from the left of `ax`, one character per monospace advance (in points, so truth and reading line
    up whatever the layout), the wrong ones bold and red."""
    from matplotlib.transforms import offset_copy

    for k, (char, bad) in enumerate(zip(text, wrong)):
        where = offset_copy(ax.transAxes, fig=ax.figure, x=k * 0.602 * MONO_PT, units="points")
        ax.text(0, y, char, transform=where, family="DejaVu Sans Mono", fontsize=MONO_PT, va="center",
                color="red" if bad else "black", weight="bold" if bad else "normal")  # fmt: skip
