"""Per-pixel class maps as JSON: COCO run-length encoding (RLE), decodable by any COCO tool.

A class map (0 = background, k = the k-th class + 1) becomes

    {"size": [h, w], "counts": "<RLE of every labeled pixel>", "classes": {"3": "<RLE of the 3s>", ...}}

`size` + `counts` is a standard COCO RLE object (`pycocotools.mask.decode` reads it as the foreground); each entry
of `classes` is the RLE counts string of one class's pixels at the same size. Only present classes are listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _encode(binary: np.ndarray) -> str:
    from pycocotools import mask as coco_mask

    return coco_mask.encode(np.asfortranarray(binary.astype(np.uint8)))["counts"].decode("ascii")


def _decode(size: Sequence[int], counts: str) -> np.ndarray:
    from pycocotools import mask as coco_mask

    return coco_mask.decode({"size": [int(size[0]), int(size[1])], "counts": counts.encode("ascii")})


def encode_class_map(class_map: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """An HxW integer class map (0 background, k -> classes[k - 1]) as the JSON mask above."""
    class_map = np.asarray(class_map)
    present = [int(k) for k in np.unique(class_map) if k > 0]
    return {
        "size": [int(class_map.shape[0]), int(class_map.shape[1])],
        "counts": _encode(class_map > 0),
        "classes": {classes[k - 1]: _encode(class_map == k) for k in present},
    }


def decode_class_map(mask: dict[str, Any], classes: Sequence[str]) -> np.ndarray:
    """The HxW uint8 class map of a JSON mask; ValueError naming the problem when it is malformed."""
    if not isinstance(mask, dict) or not isinstance(mask.get("classes"), dict):
        raise ValueError("mask must be an object with 'size', 'counts' and 'classes'")
    size = mask.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise ValueError(f"mask size must be [height, width] in pixels, got {size!r}")
    class_map = np.zeros(size, dtype=np.uint8)
    for name, counts in mask["classes"].items():
        if name not in classes:
            raise ValueError(f"mask has unknown class {name!r} (expected one of {list(classes)})")
        try:
            pixels = _decode(size, counts).astype(bool)
        except Exception as e:  # pycocotools raises bare Exceptions for bad strings
            raise ValueError(f"mask of class {name!r} is not a COCO RLE string: {e}") from None
        if (class_map[pixels] > 0).any():
            raise ValueError(f"mask of class {name!r} overlaps another class")
        class_map[pixels] = classes.index(name) + 1
    return class_map


def label_class_map(label: dict[str, Any], classes: Sequence[str]) -> np.ndarray | None:
    """The class map of a detection label (`mask`), or None for a box-only label (no `mask`, or null)."""
    mask = label.get("mask")
    return None if mask is None else decode_class_map(mask, classes)


# Label Studio's brush masks (`brushlabels` results, `"format": "rle"`) are not COCO RLE: the mask is an RGBA image
# (row-major, 4 bytes a pixel) packed as a bit stream, most significant bit first, by thi.ng's rle-pack. Header: the
# value count (32 bits), the word size - 1 (5 bits) and four run-length field widths - 1 (4 bits each); then chunks,
# each a flag bit (1: one value repeated, 0: literal values), 2 bits choosing a field width, the count - 1 in that
# many bits, and the repeated value or the literal values, word size bits each. The stream is padded to whole bytes.
BRUSH_WORD_BITS = 8
BRUSH_RUN_BITS = (3, 4, 8, 16)


def to_brush_rle(binary: np.ndarray) -> list[int]:
    """An HxW boolean mask as Label Studio's brush RLE (a list of byte values): every channel of a painted pixel is
    255, of the others 0."""
    values = np.repeat(np.asarray(binary, dtype=bool).reshape(-1), 4)
    bits = [f"{values.size:032b}", f"{BRUSH_WORD_BITS - 1:05b}", *(f"{b - 1:04b}" for b in BRUSH_RUN_BITS)]
    if values.size:
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        lengths = np.diff(np.r_[starts, values.size])
        longest = 2 ** BRUSH_RUN_BITS[-1]
        for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
            value = 255 if values[start] else 0
            while length > 0:
                n = min(length, longest)
                k = next(k for k, width in enumerate(BRUSH_RUN_BITS) if n - 1 < 2**width)
                bits.append(f"1{k:02b}{n - 1:0{BRUSH_RUN_BITS[k]}b}{value:0{BRUSH_WORD_BITS}b}")
                length -= n
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return list(int(stream, 2).to_bytes(len(stream) // 8, "big"))


def from_brush_rle(rle: Any, height: int, width: int) -> np.ndarray:
    """The HxW boolean mask of a Label Studio brush RLE: the pixels whose alpha is at least half; ValueError when
    the stream is malformed or is not a mask of that size."""
    if not isinstance(rle, (list, tuple)) or not all(isinstance(b, int) and 0 <= b < 256 for b in rle):
        raise ValueError("brush 'rle' must be a list of byte values (0-255)")
    stream = "".join(f"{b:08b}" for b in rle)
    position = 0

    def read(n: int) -> int:
        nonlocal position
        if position + n > len(stream):
            raise ValueError("brush RLE ends before its last value")
        position += n
        return int(stream[position - n : position], 2)

    count = read(32)
    word = read(5) + 1
    run_bits = [read(4) + 1 for _ in range(4)]
    if count != height * width * 4:
        raise ValueError(f"brush RLE holds {count} values, not the {height}x{width}x4 of the image")
    values = np.zeros(count, dtype=np.int64)
    i = 0
    while i < count:
        repeated = read(1)
        n = read(run_bits[read(2)]) + 1
        if i + n > count:
            raise ValueError(f"brush RLE runs past its {count} values")
        if repeated:
            values[i : i + n] = read(word)
        else:
            values[i : i + n] = [read(word) for _ in range(n)]
        i += n
    alpha = values.reshape(height, width, 4)[:, :, 3]
    return alpha >= 2 ** (word - 1)
