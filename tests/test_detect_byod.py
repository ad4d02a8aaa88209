"""Bring your own detection data, end to end: a generated COCO folder (RGB JPEGs of varied sizes and aspect ratios,
circles and squares of random colours, half of them with a mask file, half labeled with boxes only) through collect,
validate, split, train with a torchvision detector at a small input size (one epoch: the point is the contract, not
quality), evaluate, promote, and
`POST /detect` with a JPEG to `bentoml serve` of the promoted model; then the same detector's weights, saved as
torchvision's reference scripts save a checkpoint, imported with `lifecycle import` and gated as a candidate."""

import argparse
import io
import json
import os
import random
import subprocess
import sys

import httpx
import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageDraw

from conftest import CLI_IN_PROCESS, in_own_store, make_task, start_bentoml, stop_process
from lifecycle.atomic import read_jsonl
from lifecycle.masks import encode_class_map
from lifecycle.models import load_model
from lifecycle.paths import TaskPaths
from lifecycle.sources.coco import write_coco_set
from lifecycle.stages import collect, evaluate, split, train, validate

CLASSES = ["circle", "square"]
IMPORT_THEN_PROMOTE = (
    CLI_IN_PROCESS
    + """
arch, weights = sys.argv[1:]
answers = {"import": run("import", "--task", "detect", "--arch", arch, "--weights", weights)}
tag = json.loads(answers["import"]["out"].split("\\nnext:")[0])["candidate"]
answers["promote"] = run("promote", "--task", "detect", "--candidate", tag)
print("ANSWERS " + json.dumps({"tag": tag, **answers}))
"""
)
ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn"


def scene(rng: random.Random) -> tuple[bytes, dict]:
    """A JPEG of one or two shapes (one per half, so they never overlap) on a random colour, and its label."""
    width, height = rng.randint(72, 128), rng.randint(72, 128)
    image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    class_map = Image.new("L", (width, height), 0)
    boxes, labels = [], []
    for half in range(rng.randint(1, 2)):
        kind = rng.randrange(len(CLASSES))
        side = rng.randint(16, min(width // 2, height) - 4)
        x0, y0 = half * width // 2 + rng.randint(0, width // 2 - side), rng.randint(0, height - side)
        box = [x0, y0, x0 + side - 1, y0 + side - 1]
        for canvas, fill in ((image, tuple(rng.randrange(256) for _ in range(3))), (class_map, kind + 1)):
            draw = ImageDraw.Draw(canvas)
            (draw.ellipse if CLASSES[kind] == "circle" else draw.rectangle)(box, fill=fill)
        ys, xs = np.nonzero(np.asarray(class_map) == kind + 1)
        boxes.append([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])
        labels.append(CLASSES[kind])
    data = _jpeg(image)
    return data, {"boxes": boxes, "labels": labels, "mask": encode_class_map(np.asarray(class_map), CLASSES)}


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


@pytest.mark.slow
def test_a_coco_folder_trains_a_torchvision_detector_that_is_promoted_and_served(tmp_path):
    rng = random.Random(0)
    folder = tmp_path / "coco" / "shapes"
    write_coco_set(folder, [(f"{i:03d}.jpg", *scene(rng)) for i in range(30)], CLASSES)
    for mask in sorted((folder / "masks").iterdir())[::2]:
        mask.unlink()  # a box-only detector needs no class map
    params = {
        "tasks": ["detect"],
        "detect": {
            "collect": {"classes": CLASSES, "embedded": False, "folder": str(tmp_path / "coco")},
            "validate": {"min_samples": 20, "min_class_share": 0.1},
            "split": {"train": 0.6, "val": 0.2, "test": 0.2},
            "model": {
                "arch": ARCH,
                "input_size": 64,
                "score_threshold": 0.01,  # one epoch from scratch: low scores, but an answer
                "builder_args": {"box_batch_size_per_image": 32, "rpn_post_nms_top_n_test": 100},
            },
            # 6 steps (at exactly 4, OneCycleLR's one-step warm-up divides by zero: a trainer bug, reported)
            "train": {"epochs": 1, "batch_size": 4, "progress": False, "augment": []},
            "tune": {"enabled": False},
            "promote": {"min": {"map_50": 0.0}, "serving_check_samples": 2},
            "serve": {"max_latency_ms": 30000},
        },
        "serving": {"log_dir": str(tmp_path / "logs")},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    task, paths = make_task(params, "detect"), TaskPaths(tmp_path, "detect")

    collected = collect.run(task, paths)
    assert collected.new == 30 and collected.quarantined == 0, collected
    assert sum("mask" not in row["label"] for row in read_jsonl(paths.raw_manifest)) == 15
    assert validate.run(task, paths)["success"]
    split.run(task, paths)
    summary = train.run(task, paths)
    assert summary["epochs_run"] == 1 and paths.model.exists()
    metrics = evaluate.run(task, paths)
    assert "map_50" in metrics and "mean_iou" not in metrics, "a box-only detector reports no mask metric"
    predictions = read_jsonl(paths.reports("evaluate") / "predictions.jsonl")
    assert predictions and all("mask" not in row["prediction"] for row in predictions)

    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "store")}  # the session's store keeps its models
    promoted = subprocess.run(
        [sys.executable, "-m", "lifecycle.cli", "promote", "--task", "detect"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    decision = json.loads((paths.reports("promote") / "decision.json").read_text())
    assert promoted.returncode == 0 and decision["promoted"], decision.get("summary", promoted.stderr[-3000:])

    with (tmp_path / "server.log").open("w") as log:
        proc, url = start_bentoml(tmp_path, log, tmp_path / "server.log", env)
    try:
        data, _ = scene(random.Random(99))
        width, height = Image.open(io.BytesIO(data)).size
        files = {"image": ("photo.jpg", data, "image/jpeg")}
        answer = httpx.post(f"{url}/detect", files=files, timeout=60)
        refused = httpx.post(f"{url}/detect?mask=true", files=files, timeout=60)
    finally:
        stop_process(proc)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body.keys() == {"objects", "model"} and body["model"] == decision["stored_as"]
    assert body["objects"], "scores down to 0.01 are answered"
    for found in body["objects"]:
        x0, y0, x1, y1 = found["box"]
        assert found["label"] in CLASSES and 0 <= found["score"] <= 1
        assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
    assert refused.status_code == 400 and "answers boxes only" in refused.json()["error"]

    _, trained, _ = load_model(paths.model)
    checkpoint = {"model": trained.net.state_dict(), "args": argparse.Namespace(lr=0.02), "epoch": 1}
    torch.save(checkpoint, tmp_path / "checkpoint.pth")
    answers = in_own_store(tmp_path, tmp_path / "store", IMPORT_THEN_PROMOTE, ARCH, str(tmp_path / "checkpoint.pth"))
    assert answers["import"]["code"] == 0, answers
    judged = json.loads(answers["promote"]["out"])
    assert answers["promote"]["code"] == 0 and judged["judged"] == answers["tag"], answers
    assert judged["candidate"]["map_50"] == pytest.approx(metrics["map_50"], abs=1e-6), "the same weights, the same mAP"
    assert not judged["promoted"] and "does not beat production" in judged["summary"]
