"""Text-line images rendered with the fonts that ship inside the matplotlib wheel (and Pillow's built-in font),
for the `ocr` task. Fonts are found through matplotlib's font manager and kept only when they live in
matplotlib's own data folder: the system's fonts never enter, so the data set is the same on every machine.

A line is a word group, a number, a date, a code or a random string over the charset, rendered in one face of
one family at a random size, letter spacing and stroke, slightly rotated and in perspective, composited on a
textured background at a random contrast, then blurred, noised and (for some) JPEG-compressed. The family
decides the split (the params name the families of each split), so a test split of held-out families
measures how the model reads fonts it never saw."""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from lifecycle.samples import RawSample

DEFAULT_CHARSET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;-'!?()/&%#"
PILLOW_FAMILY = "Pillow"  # Pillow's built-in font (Aileron Regular), scalable since Pillow 10.1
# Faces in matplotlib's folder that are not text: math and symbol fonts map the ASCII codes to other glyphs
# (cmmi10's '(' is a harpoon), Last Resort draws a placeholder for every character.
NOT_TEXT = frozenset({"cmex10", "cmmi10", "cmsy10", "Last Resort High-Efficiency"})

WORDS = (
    "the of and to in is for on with as by at from or an be this that are was not but all can had her one our out "
    "day get has him his how man new now old see two way who boy did its let put say she too use about account "
    "address after again amount apple april area august balance bank because before below between bill black blue "
    "board book border brown budget cable call card carry case cash center change check city class clear close "
    "code coffee company contact copy corner count court cover credit current customer daily data date dear delivery "
    "design desk detail direct door double down draft drive early east edge email energy entry error evening event "
    "every exit express factory family field figure file final first floor flow form forward free friday front "
    "fuel garden gate general glass global green group guest hand heavy help high hold home hotel hour house image "
    "index input invoice issue item january july june kitchen label large late layer level light limit line list "
    "local lunch main march market master medium meeting member menu message metal middle model monday month "
    "morning motor mountain name north note number object office online open order orange page paper park part "
    "party pass payment people phone place plan plant point police power press price print private product public "
    "quality quarter question quick radio range rate ready receipt record red region report return river road room "
    "route safety sale saturday school second section service set ship shop short signal silver simple single size "
    "small south speed square staff stage standard start station status steel stock store street summer sunday "
    "supply system table tax team terms thursday ticket time today total tower track trade train travel tuesday "
    "under unit update user valley value vendor view village visit water wednesday week west white window winter "
    "world yellow yesterday young zone don't it's can't we're o'clock"
).split()
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class FontFace:
    family: str
    style: str  # e.g. "normal 400", "italic 700"
    path: Path | None  # None: Pillow's built-in font

    def load(self, size: int) -> ImageFont.FreeTypeFont:
        if self.path is None:
            return cast(ImageFont.FreeTypeFont, ImageFont.load_default(size))  # FreeType is available
        return ImageFont.truetype(str(self.path), size)


@dataclass(frozen=True)
class LineStyle:
    """How lines are rendered and degraded."""

    min_chars: int = 3
    max_chars: int = 24
    min_font_px: int = 18
    max_font_px: int = 34
    max_rotation: float = 2.0  # degrees
    max_perspective: float = 0.04  # corner displacement, as a share of the line height
    jpeg_share: float = 0.5


@cache
def text_faces() -> Mapping[str, tuple[FontFace, ...]]:
    """Every text face that ships inside the matplotlib wheel, by family, plus Pillow's built-in font."""
    import matplotlib
    from matplotlib import font_manager

    own = Path(matplotlib.get_data_path()).resolve()
    families: dict[str, list[FontFace]] = {}
    for entry in sorted(font_manager.fontManager.ttflist, key=lambda e: e.fname):
        path = Path(entry.fname).resolve()
        if own in path.parents and entry.name not in NOT_TEXT:
            families.setdefault(entry.name, []).append(FontFace(entry.name, f"{entry.style} {entry.weight}", path))
    families[PILLOW_FAMILY] = [FontFace(PILLOW_FAMILY, "normal 400", None)]
    return {name: tuple(faces) for name, faces in sorted(families.items())}


def missing_characters(face: FontFace, charset: str) -> str:
    """The characters of `charset` the face has no glyph for (space needs none): from the font's character map,
    or for Pillow's built-in font (no file to read it from) from whether the character leaves ink."""
    if face.path is None:
        font = face.load(24)
        return "".join(c for c in charset if c != " " and font.getmask(c).getbbox() is None)
    charmap = _charmap(str(face.path))
    return "".join(c for c in charset if c != " " and ord(c) not in charmap)


@cache
def _charmap(path: str) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font

    return frozenset(FT2Font(path).get_charmap())


def random_text(rng: np.random.Generator, charset: str, style: LineStyle) -> str:
    """One line's text: words, a number, a date, a code or a random string, cut to the length limits and to
    the characters of `charset`."""
    kind = rng.choice(["words", "words", "number", "date", "code", "random"])
    text = {"words": _words, "number": _number, "date": _date, "code": _code, "random": _random}[kind](rng, charset)
    text = " ".join("".join(c for c in text if c in charset).split())[: style.max_chars].strip()
    while len(text) < style.min_chars:
        text = (text + " " + _random(rng, charset)).strip()[: style.max_chars].strip()
    return text


def _words(rng: np.random.Generator, charset: str) -> str:
    words = [str(w) for w in rng.choice(WORDS, size=int(rng.integers(1, 4)))]
    case = rng.choice(["lower", "title", "upper", "first"], p=[0.35, 0.25, 0.15, 0.25])
    words = [w.upper() if case == "upper" else w[:1].upper() + w[1:] if case == "title" else w for w in words]
    if case == "first":
        words[0] = words[0].capitalize()
    if len(words) > 1 and rng.random() < 0.15:
        words.insert(1, "&")
    text = " ".join(words)
    if rng.random() < 0.15:
        text = f"({text})"
    if rng.random() < 0.4:
        text += str(rng.choice(list(".,:;!?")))
    return text


def _number(rng: np.random.Generator, charset: str) -> str:
    value = rng.uniform(0, 10 ** rng.integers(1, 7))
    form = rng.integers(0, 4)
    text = (f"{int(value)}", f"{value:,.2f}", f"{value % 100:.1f}%", f"#{int(value)}")[form]
    return ("-" + text) if form < 2 and rng.random() < 0.2 else text


def _date(rng: np.random.Generator, charset: str) -> str:
    y, m, d = int(rng.integers(1950, 2040)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    hh, mm = int(rng.integers(0, 24)), int(rng.integers(0, 60))
    forms = (
        f"{y}-{m:02d}-{d:02d}",
        f"{d:02d}/{m:02d}/{y}",
        f"{d} {MONTHS[m - 1]} {y}",
        f"{hh:02d}:{mm:02d}",
        f"{MONTHS[m - 1]} {d}, {y}",
        f"{y}-{m:02d}-{d:02d} {hh:02d}:{mm:02d}",
    )
    return forms[int(rng.integers(0, len(forms)))]


def _code(rng: np.random.Generator, charset: str) -> str:
    upper = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    parts = [
        "".join(rng.choice(list(upper), size=int(rng.integers(1, 4)))),
        "".join(rng.choice(list("0123456789"), size=int(rng.integers(2, 7)))),
    ]
    if rng.random() < 0.5:
        parts.append("".join(rng.choice(list(upper + "0123456789"), size=int(rng.integers(1, 4)))))
    return str(rng.choice(["", "#"])) + str(rng.choice(["-", "/", "", " "])).join(parts)


def _random(rng: np.random.Generator, charset: str) -> str:
    return "".join(rng.choice(list(charset), size=int(rng.integers(3, 13))))


def render_line(text: str, face: FontFace, rng: np.random.Generator, style: LineStyle = LineStyle()) -> np.ndarray:
    """`text` as a uint8 HxW grayscale image, degraded at random: the line box of the font (ascent to descent,
    so letter case shows in height), a little padding, and the whole text inside it."""
    size = int(rng.integers(style.min_font_px, style.max_font_px + 1))
    font = face.load(size)
    spacing = float(rng.choice([0.0, 0.0, rng.uniform(-0.04, 0.15)])) * size
    stroke = int(rng.random() < 0.15 and size >= 24)
    coverage, margin = _text_coverage(text, font, spacing, stroke)
    coverage = _warp(coverage, margin, rng, style)
    image = _composite(coverage, rng)
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.0)))) if rng.random() < 0.5 else image
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, rng.uniform(0, 10), (image.height, image.width))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _text_coverage(text: str, font: ImageFont.FreeTypeFont, spacing: float, stroke: int) -> tuple[Image.Image, int]:
    """The text's ink as an L image, the font's line box high and the text's advance wide, and the margin
    around both."""
    ascent, descent = font.getmetrics()
    margin = cast(int, font.size) // 2 + stroke  # loaded with an int size
    advances = [font.getlength(c) + spacing for c in text]
    width = int(sum(advances) - spacing + 2 * margin) + 1 if spacing else int(font.getlength(text) + 2 * margin) + 1
    canvas = Image.new("L", (max(width, 2 * margin + 1), ascent + descent + 2 * margin), 0)
    draw = ImageDraw.Draw(canvas)
    if spacing:
        x = float(margin)
        for char, advance in zip(text, advances):
            draw.text((x, margin), char, fill=255, font=font, stroke_width=stroke, stroke_fill=255)
            x += advance
    else:
        draw.text((margin, margin), text, fill=255, font=font, stroke_width=stroke, stroke_fill=255)
    return canvas, margin


def _warp(coverage: Image.Image, margin: int, rng: np.random.Generator, style: LineStyle) -> Image.Image:
    """Rotate slightly, skew in perspective, then crop: the ink's columns plus a little, the line box's rows."""
    if style.max_rotation:
        coverage = coverage.rotate(
            float(rng.uniform(-style.max_rotation, style.max_rotation)), Image.Resampling.BICUBIC
        )
    if style.max_perspective:
        w, h = coverage.size
        d = style.max_perspective * h
        corners = [
            (float(x + rng.uniform(-d, d)), float(y + rng.uniform(-d, d))) for x, y in ((0, 0), (0, h), (w, h), (w, 0))
        ]
        coverage = coverage.transform(
            coverage.size, Image.Transform.QUAD, [c for xy in corners for c in xy], Image.Resampling.BICUBIC
        )
    ink = coverage.getbbox() or (0, 0, coverage.width, coverage.height)
    pad_x = [int(rng.integers(1, max(2, margin // 2 + 1))) for _ in range(2)]
    pad_y = [int(rng.integers(0, max(1, margin // 3 + 1))) for _ in range(2)]
    box = (
        max(0, ink[0] - pad_x[0]),
        max(0, margin - pad_y[0]),
        min(coverage.width, ink[2] + pad_x[1]),
        min(coverage.height, coverage.height - margin + pad_y[1]),
    )
    return coverage.crop(box)


def _composite(coverage: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Ink over a textured background, at a random contrast; dark on light most of the time."""
    w, h = coverage.size
    alpha = np.asarray(coverage, dtype=np.float32) / 255.0
    ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :] * np.ones((h, 1), np.float32)
    paper = float(rng.uniform(150, 255))
    ground = paper - rng.uniform(0, 40) * (ramp if rng.random() < 0.5 else ramp[:, ::-1])
    coarse = rng.normal(0, 1, (3, max(2, w // 16))).astype(np.float32)
    ground += np.asarray(Image.fromarray(coarse, mode="F").resize((w, h), Image.Resampling.BICUBIC)) * rng.uniform(
        0, 12
    )
    ink = float(rng.uniform(0, max(1.0, paper - 90)))
    if rng.random() < 0.2:  # light text on a dark ground
        ground, ink = 255 - ground, 255 - ink
    image = ground * (1 - alpha) + ink * alpha
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="L")


def encode_line(pixels: np.ndarray, rng: np.random.Generator, style: LineStyle = LineStyle()) -> tuple[bytes, str]:
    """The line as stored: a JPEG at a random quality (compression artifacts) for `jpeg_share` of lines, else PNG."""
    buf = io.BytesIO()
    if rng.random() < style.jpeg_share:
        Image.fromarray(pixels, mode="L").save(buf, format="JPEG", quality=int(rng.integers(30, 96)))
        return buf.getvalue(), ".jpg"
    Image.fromarray(pixels, mode="L").save(buf, format="PNG")
    return buf.getvalue(), ".png"


def rendered_lines(
    count: int,
    families: Mapping[str, Sequence[str]],
    shares: Mapping[str, float],
    charset: str,
    seed: int,
    style: LineStyle = LineStyle(),
) -> Iterator[RawSample]:
    """`count` lines, each split's share rendered in that split's families (faces drawn evenly), the family as
    the sample's group and its split decided here."""
    faces = text_faces()
    for split, names in families.items():
        pool = [face for name in names for face in faces[name]]
        n = round(count * shares[split])
        rng = np.random.default_rng([seed, sum(map(ord, split))])
        for i in range(n):
            face = pool[i % len(pool)]
            text = random_text(rng, charset, style)
            data, suffix = encode_line(render_line(text, face, rng, style), rng, style)
            yield RawSample(
                data=data,
                suffix=suffix,
                label=text,
                source="embedded",
                group=face.family,
                split=split,
                origin=f"rendered:{split}:{i}:{face.family}:{face.style}",
            )
