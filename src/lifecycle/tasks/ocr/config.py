"""The ocr task's own sections of params.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from lifecycle.config import Strict
from lifecycle.sequence import EncoderHeight
from lifecycle.sources.textlines import DEFAULT_CHARSET, LineStyle
from lifecycle.splitting import SPLITS

DEFAULT_FAMILIES = {
    "train": [
        "DejaVu Sans",
        "DejaVu Sans Mono",
        "Geist",
        "Geist Mono",
        "HK Grotesk",
        "STIXGeneral",
        "cmr10",
        "cmb10",
        "cmti10",
        "cmtt10",
    ],
    "val": ["cmss10", "Pillow"],
    "test": ["DejaVu Serif"],
}


class OcrCollect(Strict):
    charset: str = Field(DEFAULT_CHARSET, min_length=1, description="the characters a label may hold")
    embedded: bool = Field(True, description="render lines with the fonts inside installed packages (and Pillow's)")
    lines: int = Field(10_000, ge=1, description="rendered lines, shared out by the split ratios")
    seed: int = 0
    min_chars: int = Field(3, ge=1)
    max_chars: int = Field(16, ge=1)
    min_font_px: int = Field(18, ge=6)
    max_font_px: int = Field(34, ge=6)
    families: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_FAMILIES.items()},
        description="the font families each split is rendered in (disjoint)",
    )
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
        from lifecycle.sources.fonts import missing_characters, text_faces

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
                    raise ValueError(
                        f"families.{split}: no text font family '{name}' in the installed Python packages (or "
                        f"Pillow's built-in 'Pillow'); available: {sorted(faces)}"
                    )
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
