"""Where ocr's lines come from: lines rendered with the fonts inside installed Python packages (each split in its own
font families), a user folder and the landing zone, both a folder of images with a `labels.tsv`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lifecycle.imaging import inspect_image
from lifecycle.samples import InvalidSample, Label, RawSample, Rejected
from lifecycle.sequence import STRIDE
from lifecycle.tasks.ocr.codec import resized_width, too_wide
from lifecycle.tasks.parts import Checks, Source


class OcrSource(Source):
    reads = ("collect", "split", "model")

    @property
    def charset(self) -> str:
        return self.cfg.collect.charset

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

    def groupings(self, row: dict[str, Any]) -> dict[str, str]:
        return {"family": str(row["group"])} if row.get("group") else {}

    def inspect(self, data: bytes, label: Label) -> dict[str, Any]:
        if not isinstance(label, str) or not label.strip():
            raise InvalidSample("empty label: a line needs its text")
        if outside := sorted({c for c in label if c not in self.charset}):
            raise InvalidSample(f"characters outside the charset: {''.join(outside)!r} in {label!r}")
        try:
            meta = inspect_image(data)
        except ValueError as e:
            raise InvalidSample(str(e)) from None
        if problem := too_wide(meta["width"], meta["height"], self.cfg.model):
            raise InvalidSample(problem)
        frames = resized_width(meta["width"], meta["height"], self.cfg.model.height) // STRIDE
        return {**meta, "chars": len(label), "frames": frames}

    def data_checks(self, rows: list[dict[str, Any]]) -> Checks:
        """Each line's text only from the charset, and no more characters than the encoder has frames for it
        (CTC emits at most one character per frame; a longer label cannot be learned)."""
        import re

        import great_expectations.expectations as gxe
        import pandas as pd

        lines = pd.DataFrame.from_records(
            [
                {"sample_id": r["sample_id"], "text": r["label"], "chars": r.get("chars"), "frames": r.get("frames")}
                for r in rows
            ],
            columns=["sample_id", "text", "chars", "frames"],
        )
        return {
            "lines": (
                lines,
                [
                    gxe.ExpectColumnValuesToMatchRegex(column="text", regex=f"^[{re.escape(self.charset)}]+$"),
                    gxe.ExpectColumnValuesToBeBetween(column="chars", min_value=1),
                    gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="frames", column_B="chars", or_equal=True),
                ],
            )
        }
