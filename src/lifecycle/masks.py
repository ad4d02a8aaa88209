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
