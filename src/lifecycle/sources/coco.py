"""Detection data in the COCO layout, for user data sets and the landing zone. Any folder below the root holding an
`annotations.json` is one data set:

    <set>/annotations.json     COCO: "images" [{id, file_name, width, height}], "categories" [{id, name}],
                               "annotations" [{image_id, category_id, bbox: [x, y, width, height],
                                               segmentation (optional), iscrowd (optional)}]
    <set>/<file_name>          each image, at the path its file_name gives (e.g. images/0001.png)
    <set>/masks/<stem>.png     optional: each image's class map, 8-bit, pixel = the category id, 0 = background

An image's class map comes from its mask file, else from its annotations' `segmentation` (polygons or RLE, as COCO
writes them; every object of the image needs one), else the image is labeled with boxes only, which the box-only
architectures train on. A crowd annotation (`iscrowd: 1`) paints its pixels but is no box, as in torchvision's
reference scripts. Category names must be the task's classes. Anything that does not fit (a box outside its image,
an unknown category, a wrong-sized mask, a file no annotations.json lists) is rejected with the reason."""

from __future__ import annotations

import io
import json
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lifecycle.masks import encode_class_map
from lifecycle.samples import RawSample, Rejected

ANNOTATIONS = "annotations.json"


def coco_folders(root: Path, source: str, classes: Sequence[str]) -> Iterator[RawSample | Rejected]:
    """Every image of every COCO set below `root`, labeled; every other file rejected with the reason."""
    if not root.is_dir():
        raise FileNotFoundError(f"{source} folder {root} does not exist or is not a directory")
    used: set[Path] = set()
    for listing in sorted(root.rglob(ANNOTATIONS)):
        used.add(listing)
        yield from coco_set(listing, source, classes, used)
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if path not in used:
            reason = f"not listed in any {ANNOTATIONS} (expected the COCO layout: <set>/{ANNOTATIONS}, images, masks/)"
            yield Rejected(source, str(path), reason, path.read_bytes(), path.suffix.lower())


def coco_set(annotations: Path, source: str, classes: Sequence[str], used: set[Path]) -> Iterator[RawSample | Rejected]:
    base = annotations.parent
    try:
        coco = json.loads(annotations.read_text(encoding="utf-8"))
        images = {int(i["id"]): i for i in coco["images"]}
        categories = {int(c["id"]): str(c["name"]) for c in coco["categories"]}
        by_image: dict[int, list[dict[str, Any]]] = {i: [] for i in images}
        for a in coco["annotations"]:
            by_image.setdefault(int(a["image_id"]), []).append(a)
    except (OSError, ValueError, KeyError, TypeError) as e:
        yield Rejected(
            source,
            str(annotations),
            f"unreadable COCO annotations: {type(e).__name__}: {e}",
            annotations.read_bytes() if annotations.is_file() else None,
            ".json",
        )
        return
    for image_id, objects in by_image.items():
        info = images.get(image_id)
        if info is None:
            yield Rejected(
                source,
                f"{annotations}#image_id={image_id}",
                f"{len(objects)} annotation(s) for image_id {image_id}, which is not in 'images'",
            )
            continue
        image_path = base / str(info.get("file_name", ""))
        mask_path = base / "masks" / f"{Path(str(info.get('file_name', ''))).stem}.png"
        used.update((image_path, mask_path))
        origin = f"{annotations}#{info.get('file_name')}"
        if not image_path.is_file():
            yield Rejected(source, origin, f"image file {image_path} is missing")
            continue
        data = image_path.read_bytes()
        try:
            label = coco_label(objects, categories, mask_path, classes, image_size(info))
        except ValueError as e:
            yield Rejected(source, origin, str(e), data, image_path.suffix.lower())
            continue
        yield RawSample(data=data, suffix=image_path.suffix.lower(), label=label, source=source, origin=origin)


def image_size(info: dict[str, Any]) -> tuple[int, int] | None:
    """(height, width) as annotations.json gives them, None when it does not."""
    height, width = info.get("height"), info.get("width")
    if isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0:
        return height, width
    return None


def coco_label(
    objects: Sequence[dict[str, Any]],
    categories: dict[int, str],
    mask_path: Path,
    classes: Collection[str],
    size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The task's label of one image: boxes as [x0, y0, x1, y1] and category names, and the class map where the
    image has one (its mask file, else its objects' segmentation; `size` (h, w) is the image's); ValueError naming
    the annotation or file at fault."""
    boxes, labels = [], []
    for n, a in enumerate(objects):
        category = categories.get(int(a.get("category_id", -1)))
        if category is None:
            raise ValueError(f"annotation {n}: category_id {a.get('category_id')!r} is not in 'categories'")
        if category not in classes:
            raise ValueError(f"annotation {n}: category {category!r} is not one of the task's classes {list(classes)}")
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise ValueError(f"annotation {n}: bbox must be [x, y, width, height], got {bbox!r}")
        if a.get("iscrowd"):
            continue
        x, y, w, h = bbox
        boxes.append([x, y, x + w, y + h])
        labels.append(category)
    label: dict[str, Any] = {"boxes": boxes, "labels": labels}
    if mask_path.is_file():
        class_map = mask_file_class_map(mask_path, categories, classes)
    elif size is not None and any("segmentation" in a for a in objects):
        class_map = segmentation_class_map(objects, categories, classes, size)
    else:
        return label
    return {**label, "mask": encode_class_map(class_map, list(classes))}


def mask_file_class_map(mask_path: Path, categories: dict[int, str], classes: Collection[str]) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(mask_path.read_bytes())) as img:
            mode, ids = img.mode, np.asarray(img)  # palette images give their indices
    except OSError as e:
        raise ValueError(f"mask {mask_path} is unreadable: {e}") from None
    if mode not in ("L", "P", "I", "I;16"):
        raise ValueError(f"mask {mask_path} must be single-channel (pixel = category id), got mode {mode}")
    class_map = np.zeros(ids.shape, np.uint8)
    order = list(classes)
    for value in np.unique(ids):
        if value == 0:
            continue
        name = categories.get(int(value))
        if name is None or name not in order:
            raise ValueError(
                f"mask {mask_path} has pixel value {int(value)}, not the id of a category named like one "
                f"of the task's classes"
            )
        class_map[ids == value] = order.index(name) + 1
    return class_map


def segmentation_class_map(
    objects: Sequence[dict[str, Any]], categories: dict[int, str], classes: Collection[str], size: tuple[int, int]
) -> np.ndarray:
    """The class map painted from each object's COCO segmentation (polygons, or RLE compressed or not), in the
    annotations' order (a later object wins where two overlap)."""
    height, width = size
    order = list(classes)
    class_map = np.zeros((height, width), np.uint8)
    for n, a in enumerate(objects):
        segmentation = a.get("segmentation")
        if not segmentation:
            raise ValueError(
                f"annotation {n} has no segmentation while others of its image have: give every object one, "
                "or none (boxes only)"
            )
        try:
            pixels = segmentation_pixels(segmentation, height, width)
        except (TypeError, ValueError, UnicodeEncodeError) as e:
            raise ValueError(f"annotation {n}: unreadable segmentation: {e}") from None
        class_map[pixels.astype(bool)] = order.index(categories[int(a["category_id"])]) + 1
    return class_map


def segmentation_pixels(segmentation: Any, height: int, width: int) -> np.ndarray:
    """The HxW 0/1 pixels of one COCO segmentation; ValueError when it is neither polygons (lists of at least
    three x, y points) nor an RLE of the image's size."""
    from pycocotools import mask as coco_mask

    if isinstance(segmentation, list):
        if not all(
            isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(isinstance(v, (int, float)) for v in p)
            for p in segmentation
        ):
            raise ValueError(f"polygons must be lists of at least 3 x, y points, got {segmentation!r:.80}")
        rles = coco_mask.frPyObjects([[float(v) for v in p] for p in segmentation], height, width)
        return coco_mask.decode(coco_mask.merge(rles))
    if not (isinstance(segmentation, dict) and list(segmentation.get("size", [])) == [height, width]):
        raise ValueError(f"polygons or an RLE of size [{height}, {width}] expected, got {segmentation!r:.80}")
    counts = segmentation.get("counts")
    if isinstance(counts, list) and all(isinstance(c, int) and c >= 0 for c in counts):
        if sum(counts) != height * width:
            raise ValueError(f"uncompressed RLE counts sum to {sum(counts)}, not {height} x {width} pixels")
        return coco_mask.decode(coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width))
    if isinstance(counts, str):
        return coco_mask.decode({"size": [height, width], "counts": counts.encode("ascii")})
    raise ValueError(f"RLE counts must be a string or a list of run lengths, got {type(counts).__name__}")


def write_coco_set(folder: Path, items: Sequence[tuple[str, bytes, dict[str, Any]]], classes: Sequence[str]) -> Path:
    """Write labeled images (file name, image bytes, task label) as one COCO set under `folder`, the layout
    `coco_folders` reads: for user data prepared in code, and for the landing zone. Returns annotations.json."""
    from lifecycle.atomic import write_bytes, write_json
    from lifecycle.imaging import encode_png, inspect_image
    from lifecycle.masks import label_class_map

    categories = [{"id": k + 1, "name": name} for k, name in enumerate(classes)]
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, (name, data, label) in enumerate(items, start=1):
        write_bytes(folder / "images" / name, data)
        class_map = label_class_map(label, classes)  # 0 background, k class k-1: the category ids
        if class_map is not None:  # a box-only label has none
            write_bytes(folder / "masks" / f"{Path(name).stem}.png", encode_png(class_map))
        meta = inspect_image(data)
        images.append({"id": image_id, "file_name": f"images/{name}", "height": meta["height"], "width": meta["width"]})
        for (x0, y0, x1, y1), category in zip(label["boxes"], label["labels"]):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": classes.index(category) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                }
            )
    write_json(folder / ANNOTATIONS, {"images": images, "annotations": annotations, "categories": categories})
    return folder / ANNOTATIONS
