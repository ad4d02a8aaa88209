"""Text-line images rendered with the fonts that ship inside the installed Python distributions (and Pillow's
built-in font), for the `ocr` task; `lifecycle.sources.fonts` finds them, never among the system's fonts.

A line is a word group, a number, a date, a code or a random string over the charset, rendered in one face of
one family at a random size, letter spacing and weight, stretched or condensed, slanted, slightly rotated and
in perspective, composited on a textured background at a random contrast, then blurred, noised, binarised (a
few) and JPEG-compressed (some). The family decides the split (the params name the families of each split),
so a test split of held-out families measures how the model reads fonts it never saw; the shape changes stand
in for the faces no wheel ships (condensed, wide, bolder, slanted)."""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from lifecycle.samples import RawSample
from lifecycle.sources.fonts import FontFace, text_faces

DEFAULT_CHARSET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;-'!?()/&%#"

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
class LineStyle:
    """How lines are rendered and degraded."""

    min_chars: int = 3
    max_chars: int = 24
    min_font_px: int = 18
    max_font_px: int = 34
    max_rotation: float = 2.0  # degrees
    max_perspective: float = 0.04  # corner displacement, as a share of the line height
    jpeg_share: float = 0.5
    max_stretch: float = 1.3  # width scaled by a factor in [1/max_stretch, max_stretch] (log-uniform)
    slant_share: float = 0.3  # lines sheared as a synthetic italic (or back-slant, a fifth of them)
    max_slant: float = 0.25  # horizontal shift per unit of height
    bold_share: float = 0.2  # lines drawn with a 1-px stroke around the glyphs (bolder)
    binarize_share: float = 0.1  # lines thresholded to two levels, as from a fax or a cheap scanner
    clean_share: float = 0.15  # lines as a screen renders them: flat paper, dark ink, no blur, no noise


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
    stroke = int(rng.random() < style.bold_share and size >= 20)
    coverage, margin = _text_coverage(text, font, spacing, stroke)
    coverage = _stretch(coverage, rng, style)
    coverage = _warp(coverage, margin, rng, style)
    if rng.random() < style.clean_share:
        paper, ink = float(rng.uniform(225, 256)), float(rng.uniform(0, 60))
        return np.round(paper + (ink - paper) * np.asarray(coverage, dtype=np.float32) / 255.0).astype(np.uint8)
    image = _composite(coverage, rng)
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.0)))) if rng.random() < 0.5 else image
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, rng.uniform(0, 10), (image.height, image.width))
    if rng.random() < style.binarize_share:
        pixels = np.where(pixels > (pixels.min() + pixels.max()) / 2, 255.0, 0.0)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _stretch(coverage: Image.Image, rng: np.random.Generator, style: LineStyle) -> Image.Image:
    """Condense or widen the glyphs: the proportions of faces no wheel ships."""
    if style.max_stretch <= 1:
        return coverage
    factor = float(np.exp(rng.uniform(-1, 1) * np.log(style.max_stretch)))
    return coverage.resize((max(1, round(coverage.width * factor)), coverage.height), Image.Resampling.BICUBIC)


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
    """Slant some lines (forward mostly, as an italic), rotate slightly and skew in perspective, in one
    resampling; then crop: the ink's columns plus up to half the font size of paper either side (a reader sees
    lines cut tightly and loosely), the line box's rows."""
    w, h = coverage.size
    slant = 0.0
    if rng.random() < style.slant_share:
        slant = float(rng.uniform(0.3, 1.0) * style.max_slant) * (-1 if rng.random() < 0.2 else 1)
    angle = np.deg2rad(rng.uniform(-style.max_rotation, style.max_rotation)) if style.max_rotation else 0.0
    out_w = round(w + abs(slant) * h)
    cos, sin, d = float(np.cos(angle)), float(np.sin(angle)), style.max_perspective * h
    corners = []
    for x, y in ((0, 0), (0, h), (out_w, h), (out_w, 0)):  # where each output corner samples the input
        dx, dy = x - out_w / 2, y - h / 2
        dx, dy = cos * dx - sin * dy, sin * dx + cos * dy
        jitter = rng.uniform(-d, d, 2) if d else np.zeros(2)
        corners += [float(w / 2 + dx + slant * dy + jitter[0]), float(h / 2 + dy + jitter[1])]
    coverage = coverage.transform((out_w, h), Image.Transform.QUAD, corners, Image.Resampling.BICUBIC)
    ink = coverage.getbbox() or (0, 0, coverage.width, coverage.height)
    pad_x = [int(rng.integers(1, max(2, margin + 1))) for _ in range(2)]
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
    """`count` lines, each split's share rendered in that split's families (families drawn evenly, then the
    faces of each in turn), the family as the sample's group and its split decided here."""
    faces = text_faces()
    for split, names in families.items():
        n = round(count * shares[split])
        rng = np.random.default_rng([seed, sum(map(ord, split))])
        for i in range(n):
            family = faces[names[i % len(names)]]
            face = family[(i // len(names)) % len(family)]
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
