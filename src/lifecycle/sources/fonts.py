"""The text faces that ship inside the installed Python distributions (matplotlib's DejaVu, STIX and Computer
Modern, Great Expectations' HK Grotesk, Prefect's Geist and Geist Mono, ...) and Pillow's built-in font, for the
`ocr` task's rendered lines. A font file counts only when an installed distribution's RECORD lists it, so no
system font ever enters and the faces are the same on every machine with the same locked packages. A variable
font gives one face per named instance (Geist Thin ... Black)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import cast

from PIL import ImageFont

PILLOW_FAMILY = "Pillow"  # Pillow's built-in font (Aileron Regular), scalable since Pillow 10.1
# Faces that are not text: math and symbol fonts map the ASCII codes to other glyphs (cmmi10's '(' is a
# harpoon), Last Resort draws a placeholder for every character, Material Icons draws icons by ligature.
NOT_TEXT = frozenset({"cmex10", "cmmi10", "cmsy10", "Last Resort High-Efficiency", "Material Icons"})
_FONT_FILE = re.compile(r"^([^,\n]+\.(?:ttf|otf|woff2?)),", re.MULTILINE | re.IGNORECASE)
_NO_GLYPH = "\U0010fffd"  # a private-use code point no text font maps: it draws the font's .notdef glyph


@dataclass(frozen=True)
class FontFace:
    family: str
    style: str  # the font's own style name, e.g. "Bold Italic"
    path: Path | None  # None: Pillow's built-in font
    variation: str | None = None  # a variable font's named instance

    def load(self, size: int) -> ImageFont.FreeTypeFont:
        return _loaded(self, size)


@cache  # opening a face (a variable one above all) costs more than drawing a line with it
def _loaded(face: FontFace, size: int) -> ImageFont.FreeTypeFont:
    if face.path is None:
        return cast(ImageFont.FreeTypeFont, ImageFont.load_default(size))  # FreeType is available
    font = ImageFont.truetype(str(face.path), size)
    if face.variation is not None:
        font.set_variation_by_name(face.variation)
    return font


def distribution_font_files() -> list[Path]:
    """Every TrueType/OpenType/WOFF file an installed distribution's RECORD lists, resolved, once each."""
    from importlib.metadata import distributions

    files: set[Path] = set()
    for dist in distributions():
        record = dist.read_text("RECORD") or ""
        for name in _FONT_FILE.findall(record):
            path = Path(str(dist.locate_file(name))).resolve()
            if path.is_file():
                files.add(path)
    return sorted(files)


@cache
def text_faces() -> Mapping[str, tuple[FontFace, ...]]:
    """Every text face the installed distributions ship, by family (one face per family and style), plus
    Pillow's built-in font."""
    styles: dict[tuple[str, str], FontFace] = {}
    for path in distribution_font_files():
        for face in _faces_in(path):
            if face.family not in NOT_TEXT:
                styles.setdefault((face.family, face.style), face)
    families: dict[str, list[FontFace]] = {}
    for face in styles.values():
        families.setdefault(face.family, []).append(face)
    families[PILLOW_FAMILY] = [FontFace(PILLOW_FAMILY, "Regular", None)]
    return {name: tuple(faces) for name, faces in sorted(families.items())}


def _faces_in(path: Path) -> Iterator[FontFace]:
    try:
        font = ImageFont.truetype(str(path), 24)
    except OSError:  # a format this FreeType cannot read
        return
    family, style = font.getname()
    if family is None:
        return
    try:
        instances = [n.decode() if isinstance(n, bytes) else str(n) for n in font.get_variation_names()]
    except OSError:  # not a variable font
        instances = []
    if not instances:
        yield FontFace(family, style or "Regular", path)
    for instance in instances:
        yield FontFace(family, instance, path, instance)


@cache
def missing_characters(face: FontFace, charset: str) -> str:
    """The characters of `charset` the face cannot draw (space needs nothing): those that leave no ink or draw
    the font's .notdef glyph."""
    font = face.load(24)
    no_glyph = _mask_signature(font, _NO_GLYPH)
    missing = []
    for char in charset.replace(" ", ""):
        signature = _mask_signature(font, char)
        if signature is None or signature == no_glyph:
            missing.append(char)
    return "".join(missing)


def _mask_signature(font: ImageFont.FreeTypeFont, char: str) -> tuple[tuple[int, ...], bytes] | None:
    mask = font.getmask(char)
    box = mask.getbbox()
    return None if box is None else (tuple(box), bytes(mask))
