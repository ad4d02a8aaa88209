"""Task `detect`: scenes exact by construction, source digits that never cross splits, augmentations that move
boxes and masks with the pixels, COCO data whose bad annotations are quarantined, and the class-map encoding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lifecycle.config import SplitConfig
from lifecycle.masks import decode_class_map, encode_class_map
from lifecycle.sources.scenes import (
    ALPHA_THRESHOLD,
    SceneConfig,
    background,
    compose,
    scene_label,
    scenes,
    source_digits,
)
from lifecycle.tasks import build_task

CLASSES = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def digits():
    return source_digits(300)


def detect_task(**sections):
    base = {"collect": {"scenes": 40}, "model": {"width": 8}, "train": {"augment": []}}
    return build_task("detect", {**base, **sections})


def test_scenes_are_exact_by_construction(digits):
    """Every pixel is the background, or the background blended with a digit's colour by the digit's coverage;
    a digit's mask is where its coverage is at least one half; its box is the tight box around its mask."""
    for seed in range(25):
        scene = compose(digits, CLASSES, np.random.default_rng([7, seed]))
        expected = background(128, np.random.default_rng([7, seed]))  # compose draws the background first
        assert 1 <= len(scene.boxes) <= 6
        for i, (box, label, colour, (x0, y0, x1, y1)) in enumerate(
            zip(scene.boxes, scene.labels, scene.colours, scene.footprints)
        ):
            ys, xs = np.nonzero(scene.instances == i + 1)
            assert box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert (scene.class_map[scene.instances == i + 1] == CLASSES.index(label) + 1).all()
            alpha = scene.alpha[y0:y1, x0:x1, None]
            expected[y0:y1, x0:x1] = expected[y0:y1, x0:x1] * (1 - alpha) + colour * alpha
        np.testing.assert_array_equal(scene.image, np.round(expected).astype(np.uint8))
        np.testing.assert_array_equal(scene.class_map > 0, scene.alpha >= ALPHA_THRESHOLD)
        np.testing.assert_array_equal(
            decode_class_map(encode_class_map(scene.class_map, CLASSES), CLASSES), scene.class_map
        )


def test_digits_never_overlap_but_may_touch(digits):
    gaps = []
    for seed in range(40):
        scene = compose(digits, CLASSES, np.random.default_rng([3, seed]), SceneConfig(touch_share=1.0))
        for i, a in enumerate(scene.boxes):
            for b in scene.boxes[i + 1 :]:
                assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), "boxes overlap"
                gaps.append(max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3]))
    assert min(gaps) <= 2, "some digits are placed against each other"


def test_source_digits_never_cross_splits():
    seen: dict[str, set[str]] = {"train": set(), "val": set(), "test": set()}
    for _, split, scene in scenes(120, SplitConfig(train=0.6, val=0.2, test=0.2), CLASSES):
        seen[split].update(scene.digits)
    assert all(seen.values()), "every split has scenes"
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])


def test_augmentations_move_boxes_and_masks_with_the_pixels(tmp_path):
    flip = detect_task(train={"augment": [{"name": "RandomHorizontalFlip", "args": {"p": 1.0}}]})
    plain = detect_task()
    affine = detect_task(
        collect={"scenes": 40, "min_digits": 1, "max_digits": 1},
        train={
            "augment": [
                {"name": "RandomAffine", "args": {"degrees": 0, "translate": [0.2, 0.2], "scale": [0.7, 1.3]}},
                {"name": "ColorJitter", "args": {"brightness": 0.4, "hue": 0.1}},
            ]
        },
    )
    torch.manual_seed(0)
    checked = 0
    for task in (flip, affine):
        for sample in list(task.source.collect(tmp_path / "no-landing-zone"))[:15]:
            image, target = task.codec.decode(sample.data), task.codec.encode_target(sample.label)
            (x, t) = task.codec.transform(train=True)(image, target)
            if task is flip:
                (_, before) = plain.codec.transform(train=False)(image, target)
                width = x["image"].shape[-1]
                mirrored = before["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor(
                    [width, 0, width, 0]
                )
                assert torch.equal(t["boxes"], mirrored)
                assert torch.equal(t["mask"], before["mask"].flip(-1))
            size = x["image"].shape[-1]
            for box, label in zip(t["boxes"], t["labels"]):  # one digit per scene: its mask's box is its box
                if task is flip or box.min() <= 0 or box.max() >= size:  # a clamped box keeps the cut digit's extent
                    continue
                ys, xs = torch.nonzero(t["mask"] > 0, as_tuple=True)
                tight = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
                assert (box - tight).abs().max() <= 2.0, (box, tight)  # interpolation blurs an edge by a pixel
                assert set(t["mask"][t["mask"] > 0].tolist()) == {int(label) + 1}
                checked += 1
    assert checked >= 8


def test_coco_folder_bad_annotations_are_quarantined(tmp_path):
    from lifecycle.atomic import read_jsonl, write_json
    from lifecycle.imaging import encode_png
    from lifecycle.paths import TaskPaths
    from lifecycle.sources.coco import write_coco_set
    from lifecycle.stages.collect import collect

    made = [
        (f"scene{i}.png", encode_png(s.image), scene_label(s, CLASSES))
        for i, (_, _, s) in zip(range(7), scenes(7, SplitConfig(), CLASSES))
    ]
    folder = tmp_path / "coco"
    annotations = write_coco_set(folder, made, CLASSES)
    coco = json.loads(annotations.read_text())
    by_image = {a["image_id"]: a for a in reversed(coco["annotations"])}  # the first object of each image
    by_image[2]["bbox"] = [120, 120, 30, 30]  # runs past the 128 px image
    by_image[3]["category_id"] = 99  # no such category
    coco["categories"].append({"id": 11, "name": "cat"})
    by_image[4]["category_id"] = 11  # a category that is not one of the task's classes
    (folder / "masks" / "scene4.png").write_bytes(encode_png(np.zeros((64, 64), np.uint8)))  # wrong size
    (folder / "masks" / "scene5.png").unlink()  # no class map: a box-only label
    (folder / "stray.png").write_bytes(made[0][1])  # listed nowhere
    write_json(annotations, coco)

    task = detect_task(collect={"embedded": False, "folder": str(folder)})
    paths = TaskPaths(tmp_path / "root", "detect")
    summary = collect(task.source, paths)
    reasons = {
        row["origin"].rsplit("#", 1)[-1].rsplit("/", 1)[-1]: row["reason"] for row in read_jsonl(paths.quarantine)
    }
    assert summary.samples == 3, reasons  # scene0, scene5 and scene6
    assert "not inside the 128x128 image" in reasons["scene1.png"]
    assert "category_id 99 is not in 'categories'" in reasons["scene2.png"]
    assert "category 'cat' is not one of the task's classes" in reasons["scene3.png"]
    assert "mask is 64x64, the image 128x128" in reasons["scene4.png"]
    assert "not listed in any annotations.json" in reasons["stray.png"]
    rows = {r["origin"].rsplit("/", 1)[-1]: r for r in read_jsonl(paths.raw_manifest)}
    assert {name: r["objects"] for name, r in rows.items()} == {
        f"scene{i}.png": len(made[i][2]["boxes"]) for i in (0, 5, 6)
    }
    assert "mask" not in rows["scene5.png"]["label"] and rows["scene6.png"]["label"]["mask"] == made[6][2]["mask"]


def test_coco_class_maps_come_from_mask_files_else_segmentation_else_boxes_only(tmp_path):
    """COCO's own `segmentation` (polygons, RLE compressed or not) paints the class map where no mask file is
    given; a crowd region is painted but is no box; an image whose objects carry no segmentation has boxes only."""
    from pycocotools import mask as coco_mask

    from lifecycle.atomic import write_json
    from lifecycle.imaging import encode_png
    from lifecycle.samples import Rejected
    from lifecycle.sources.coco import coco_folders

    classes = ["a", "b"]
    two = np.zeros((40, 60), np.uint8)
    two[5:15, 10:30] = 1  # object 0, class a
    two[20:35, 40:55] = 2  # object 1, class b
    rle = coco_mask.encode(np.asfortranarray((two == 2).astype(np.uint8)))
    polygon = [[10, 5, 30, 5, 30, 15, 10, 15]]  # object 0's rectangle
    uncompressed = {"size": [40, 60], "counts": _uncompressed_counts(two == 2)}
    annotations = {
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "images": [{"id": k, "file_name": f"{k}.png", "height": 40, "width": 60} for k in range(1, 6)],
        "annotations": [
            {"image_id": 1, "category_id": 1, "bbox": [10, 5, 20, 10], "segmentation": polygon},
            {
                "image_id": 1,
                "category_id": 2,
                "bbox": [40, 20, 15, 15],
                "segmentation": {"size": [40, 60], "counts": rle["counts"].decode("ascii")},
            },
            {"image_id": 2, "category_id": 2, "bbox": [40, 20, 15, 15], "segmentation": uncompressed},
            {"image_id": 2, "category_id": 1, "bbox": [10, 5, 20, 10], "segmentation": polygon, "iscrowd": 1},
            {"image_id": 3, "category_id": 1, "bbox": [10, 5, 20, 10]},
            {"image_id": 4, "category_id": 1, "bbox": [10, 5, 20, 10], "segmentation": polygon},
            {"image_id": 4, "category_id": 2, "bbox": [40, 20, 15, 15]},
            {"image_id": 5, "category_id": 1, "bbox": [10, 5, 20, 10], "segmentation": [[1, 2]]},
        ],
    }
    for k in range(1, 6):
        (tmp_path / f"{k}.png").write_bytes(encode_png(np.full((40, 60, 3), 90, np.uint8)))
    write_json(tmp_path / "annotations.json", annotations)
    found = {Path(s.origin).name.split("#")[-1]: s for s in coco_folders(tmp_path, "folder", classes)}

    first = decode_class_map(found["1.png"].label["mask"], classes)
    assert found["1.png"].label["boxes"] == [[10, 5, 30, 15], [40, 20, 55, 35]]
    np.testing.assert_array_equal(first == 2, two == 2)  # RLE: exact
    polygon_pixels = first == 1
    assert polygon_pixels[6:14, 11:29].all() and not polygon_pixels[:, :9].any() and 180 <= polygon_pixels.sum() <= 231
    crowd = found["2.png"].label
    assert crowd["boxes"] == [[40, 20, 55, 35]] and crowd["labels"] == ["b"], "a crowd region is no box"
    crowd_map = decode_class_map(crowd["mask"], classes)
    np.testing.assert_array_equal(crowd_map == 2, two == 2)
    assert (crowd_map == 1).sum() == polygon_pixels.sum(), "but its pixels are its class's"
    assert "mask" not in found["3.png"].label, "no segmentation, no mask file: boxes only"
    assert isinstance(found["4.png"], Rejected) and "annotation 1 has no segmentation" in found["4.png"].reason
    assert "annotation 0: unreadable segmentation" in found["5.png"].reason


def _uncompressed_counts(binary: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: alternating runs of 0s and 1s over the pixels in column-major order."""
    flat = binary.flatten(order="F").astype(np.uint8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    return [0, *runs] if flat[0] else runs


def test_masks_encode_as_coco_rle():
    from pycocotools import mask as coco_mask

    class_map = np.zeros((5, 7), np.uint8)
    class_map[1:3, 1:3] = 4  # class "3"
    class_map[3, 5:7] = 1  # class "0"
    encoded = encode_class_map(class_map, CLASSES)
    assert set(encoded["classes"]) == {"3", "0"}
    foreground = coco_mask.decode({"size": encoded["size"], "counts": encoded["counts"]})
    np.testing.assert_array_equal(foreground, class_map > 0)
    with pytest.raises(ValueError, match="unknown class"):
        decode_class_map({**encoded, "classes": {"x": encoded["counts"]}}, CLASSES)
    with pytest.raises(ValueError, match="size"):
        decode_class_map({**encoded, "size": [0, 3]}, CLASSES)


def test_validation_checks_boxes_classes_object_counts_and_mask_sizes(tmp_path):
    from lifecycle.atomic import read_jsonl, write_jsonl
    from lifecycle.paths import TaskPaths
    from lifecycle.stages.collect import collect
    from lifecycle.stages.validate import DataValidationError, validate

    task = detect_task(validate={"min_samples": 10, "min_class_share": 0.0, "max_objects": 2})
    paths = TaskPaths(tmp_path, "detect")
    collect(task.source, paths)
    rows = read_jsonl(paths.raw_manifest)
    rows[0]["label"]["boxes"][0] = [100, 100, 140, 120]  # past the 128 px edge
    rows[1]["label"]["labels"][0] = "cat"
    rows[2]["label"]["mask"]["size"] = [64, 64]
    write_jsonl(paths.raw_manifest, rows)
    with pytest.raises(DataValidationError) as err:
        validate(task.source, task.cfg.validation, paths)
    message = str(err.value)
    assert "boxes: expect_column_pair_values_a_to_be_greater_than_b" in message
    assert "boxes: expect_column_values_to_be_in_set on 'class'" in message
    assert "images: expect_column_pair_values_to_be_equal" in message
    assert "images: expect_column_values_to_be_between on 'objects'" in message  # scenes of 3+ digits
