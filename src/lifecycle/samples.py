"""What every layer says about data: a collected sample, a rejected one, and the two ways input can be bad.

A label is any JSON value, so one manifest format carries every task:
  classify  "7"
  detect    {"boxes": [[x0, y0, x1, y1], ...], "labels": ["3", ...], "mask": <COCO RLE of the class map>}
            ("mask" absent or null: a box-only label, for the box-only architectures)
  ocr       "Invoice 2024-03-01"
  asr       "call nine one one"
A sample's input is one stored file (image or audio bytes, kept unchanged); `group` names what must stay on
one side of the split (a font family for OCR, a speaker for ASR, a source digit for detection scenes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Label = Any  # JSON-serialisable
Batch = tuple[Any, Any]  # (inputs, targets), each a tensor or a structure of tensors


@dataclass(frozen=True)
class RawSample:
    """A sample a source produced, before the collect stage stores it."""

    data: bytes
    suffix: str  # file extension of the stored input, e.g. ".png", ".wav"
    label: Label
    source: str  # "embedded", "folder", "incoming", ...
    origin: str  # where exactly it came from: a file path, a dataset index
    group: str | None = None  # split unit; None means the content hash
    split: str | None = None  # a split the source already decided (scenes drawn from split source items)


@dataclass(frozen=True)
class Rejected:
    """A candidate sample that cannot be used; it goes to the quarantine with its reason."""

    source: str
    origin: str
    reason: str
    data: bytes | None = None
    suffix: str = ""


class InvalidSample(ValueError):
    """Raised by a task's inspection with the reason a sample is unusable."""


class InvalidInput(ValueError):
    """An input (or the request carrying it) that cannot be answered, raised by decoding and the service's
    upload checks; `status` is the HTTP status returned (400 malformed, 413 too large, 415 unsupported kind)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
