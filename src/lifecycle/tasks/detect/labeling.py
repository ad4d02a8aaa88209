"""detect in Label Studio: a rectangle per object (`RectangleLabels`) and the class map painted with brushes
(`BrushLabels`, one brush mask per class in Label Studio's own RLE) over the image; reviewed images land as a COCO
set (`annotations.json`, `images/`, `masks/`) that collect reads."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from lifecycle.imaging import inspect_image
from lifecycle.masks import decode_class_map, encode_class_map, from_brush_rle, to_brush_rle
from lifecycle.tasks.parts import Labeling, Landing

BOX, MASK, IMAGE = "box", "mask", "image"


class DetectLabeling(Labeling):
    reads = ("collect",)

    @property
    def classes(self) -> list[str]:
        return list(self.cfg.collect.classes)

    def interface(self) -> str:
        labels = "".join(f"<Label value={quoteattr(c)}/>" for c in self.classes)
        return (
            f'<View><Image name="{IMAGE}" value="${IMAGE}" zoom="true"/>'
            f'<RectangleLabels name="{BOX}" toName="{IMAGE}">{labels}</RectangleLabels>'
            f'<BrushLabels name="{MASK}" toName="{IMAGE}">{labels}</BrushLabels></View>\n'
        )

    def to_label_studio(self, prediction: dict[str, Any]) -> list[dict[str, Any]]:
        """Boxes in percent of the image, as Label Studio places rectangles; each class's pixels as a brush mask
        (where the architecture answers masks)."""
        height, width = prediction["mask"]["size"] if "mask" in prediction else prediction["size"]
        size = {"original_width": width, "original_height": height, "image_rotation": 0}
        result = []
        for o in prediction["objects"]:
            x0, y0, x1, y1 = o["box"]
            box = {"x": 100 * x0 / width, "y": 100 * y0 / height, "width": 100 * (x1 - x0) / width}
            box |= {"height": 100 * (y1 - y0) / height, "rotation": 0, "rectanglelabels": [o["label"]]}
            result.append({"from_name": BOX, "to_name": IMAGE, "type": "rectanglelabels", "value": box, **size})
        if "mask" not in prediction:
            return result
        class_map = decode_class_map(prediction["mask"], self.classes)
        for k in (int(v) for v in np.unique(class_map) if v > 0):
            brush = {"format": "rle", "rle": to_brush_rle(class_map == k), "brushlabels": [self.classes[k - 1]]}
            result.append({"from_name": MASK, "to_name": IMAGE, "type": "brushlabels", "value": brush, **size})
        return result

    def from_label_studio(self, result: Any, data: bytes) -> dict[str, Any]:
        """The reviewed boxes and class map, in the pixels of the image `data`. An image without objects has an
        empty result; boxes without any brush are a box-only label (no class map), for the box-only architectures."""
        meta = inspect_image(data)
        width, height = meta["width"], meta["height"]
        if not isinstance(result, list):
            raise ValueError(f"a result is a list of regions, got {type(result).__name__}")
        boxes, labels = [], []
        class_map = np.zeros((height, width), np.uint8)
        brushed = not result
        for n, region in enumerate(result):
            kind = region.get("type") if isinstance(region, dict) else None
            if kind not in ("rectanglelabels", "brushlabels"):
                raise ValueError(f"result {n}: expected a 'rectanglelabels' or 'brushlabels' region, got {kind!r}")
            for key, actual in (("original_width", width), ("original_height", height)):
                if region.get(key, actual) != actual:
                    raise ValueError(f"result {n}: {key} {region[key]} is not the image's {actual}")
            value = region.get("value") or {}
            name = self._class_of(value.get(kind), n)
            if kind == "rectanglelabels":
                boxes.append(_box_pixels(value, width, height, n))
                labels.append(name)
                continue
            if value.get("format") != "rle":
                raise ValueError(f"result {n}: brush format {value.get('format')!r}; only 'rle' is read")
            brushed = True
            pixels, k = from_brush_rle(value.get("rle"), height, width), self.classes.index(name) + 1
            if ((class_map[pixels] > 0) & (class_map[pixels] != k)).any():
                raise ValueError(f"result {n}: the brush of class {name!r} paints over another class's pixels")
            class_map[pixels] = k
        if not brushed:
            return {"boxes": boxes, "labels": labels}
        return {"boxes": boxes, "labels": labels, "mask": encode_class_map(class_map, self.classes)}

    def _class_of(self, names: Any, n: int) -> str:
        if not (isinstance(names, list) and len(names) == 1 and names[0] in self.classes):
            raise ValueError(f"result {n}: expected one class of {self.classes}, got {names!r}")
        return str(names[0])

    def land(self, incoming: Path, samples: Sequence[Landing]) -> list[Path]:
        """One new COCO set per import, named by its images; an image already in a set of the landing zone stays
        where it is."""
        from lifecycle.sources.coco import ANNOTATIONS, write_coco_set

        new = [s for s in samples if not any(incoming.glob(f"*/images/{s.name}"))]
        if not new:
            return []
        folder = incoming / f"reviewed-{hashlib.sha256(' '.join(s.name for s in new).encode()).hexdigest()[:16]}"
        write_coco_set(folder, [(s.name, s.data, s.label) for s in new], self.classes)
        masks = [folder / "masks" / f"{Path(s.name).stem}.png" for s in new if s.label.get("mask") is not None]
        return [folder / ANNOTATIONS, *(folder / "images" / s.name for s in new), *masks]


def _box_pixels(value: dict[str, Any], width: int, height: int, n: int) -> list[float]:
    """A Label Studio rectangle (percent of the image, top-left corner) as [x0, y0, x1, y1] in pixels."""
    try:
        x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"result {n}: a rectangle needs numbers x, y, width, height, got {value!r}") from None
    if float(value.get("rotation") or 0) != 0:
        raise ValueError(f"result {n}: rotated rectangles cannot be COCO boxes (rotation {value['rotation']})")
    corners = (x * width, y * height, (x + w) * width, (y + h) * height)
    return [round(v / 100, 2) for v in corners]
