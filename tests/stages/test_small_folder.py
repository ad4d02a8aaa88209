"""A user's small folder of photos with the default train params: 200 generated RGB images of two shapes (random
colours, sizes, positions, rotations and aspect ratios; only the shape tells the classes apart), built-in network.
(resnet18 at 64 px from scratch is not tested here: on this folder it learns the training images by heart, held-out
accuracy 0.50-0.55 with every train setting tried; see issue 18's notes.)"""

import colorsys
import json
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from conftest import make_task
from lifecycle.atomic import read_jsonl
from lifecycle.data import ManifestDataset
from lifecycle.models import load_model
from lifecycle.paths import TaskPaths
from lifecycle.stages import collect, split, train
from lifecycle.stages.evaluate import scalar_metrics

KINDS = ("circle", "square")


def colours(rng: random.Random) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A dark background and a light foreground, each of a random hue and saturation. (With the two swapped at
    random, half the images are negatives of the other half: the built-in network then needed about 3x the steps,
    held-out accuracy 0.88 after 15 epochs against 0.995 after 10 with one polarity.)"""
    dark, light = rng.uniform(0.1, 0.35), rng.uniform(0.65, 0.9)
    return tuple(
        tuple(int(255 * v) for v in colorsys.hls_to_rgb(rng.random(), level, rng.uniform(0.3, 1.0)))
        for level in (dark, light)
    )  # type: ignore[return-value]


def shape_image(kind: str, rng: random.Random) -> Image.Image:
    width, height = rng.randint(48, 96), rng.randint(48, 96)
    background, foreground = colours(rng)
    image = Image.new("RGB", (width, height), background)
    size = rng.uniform(0.45, 0.8) * min(width, height)
    cx, cy = rng.uniform(size / 2, width - size / 2), rng.uniform(size / 2, height - size / 2)
    draw = ImageDraw.Draw(image)
    if kind == "circle":
        draw.ellipse([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2], fill=foreground)
    else:
        angle, reach = rng.uniform(0, np.pi / 2), 0.6 * size
        corners = [
            (cx + reach * np.cos(angle + k * np.pi / 2), cy + reach * np.sin(angle + k * np.pi / 2)) for k in range(4)
        ]
        draw.polygon(corners, fill=foreground)
    noise = np.random.default_rng(rng.randrange(2**31)).normal(0, 8, (height, width, 3))
    return Image.fromarray((np.asarray(image, dtype=np.float32) + noise).clip(0, 255).astype(np.uint8))


def shapes_folder(root, count: int, seed: int = 0):
    """`count` JPEGs in the <root>/<class>/<image> layout, the classes alternating."""
    rng = random.Random(seed)
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        (root / kind).mkdir(parents=True, exist_ok=True)
        shape_image(kind, rng).save(root / kind / f"{i:03d}.jpg", quality=90)
    return root


def folder_section(folder) -> dict:
    return {
        "collect": {"classes": list(KINDS), "embedded": False, "folder": str(folder)},
        "validate": {"min_samples": 100},
        "train": {"progress": False},  # everything else as TrainConfig's defaults
        "tune": {"enabled": False},
    }


def held_out_accuracy(tmp_path, model_file, count: int) -> float:
    """The accuracy of a trained model over `count` new images drawn with another seed. (The folder's own test split
    holds 17 images: a model right 95 % of the time scores below 0.9 there about one run in five.)"""
    folder = shapes_folder(tmp_path / "held_out_photos", count, seed=1)
    task = make_task({"tasks": ["classify"], "classify": folder_section(folder)})
    paths = TaskPaths(tmp_path / "held_out", "classify")
    collect.run(task, paths)
    model_task, model, _ = load_model(model_file, torch.device("cpu"))
    dataset = ManifestDataset(model_task.codec, read_jsonl(paths.raw_manifest), paths.raw, train=False)
    return scalar_metrics(model_task, model, dataset, torch.device("cpu"))[0]["accuracy"]


@pytest.mark.slow
def test_the_default_train_params_learn_a_200_image_folder(tmp_path):
    task = make_task({"tasks": ["classify"], "classify": folder_section(shapes_folder(tmp_path / "photos", 200))})
    paths = TaskPaths(tmp_path, "classify")
    for stage in (collect, split, train):
        stage.run(task, paths)
    summary = json.loads((paths.reports("train") / "summary.json").read_text())
    assert summary["train_samples"] + summary["val_samples"] > 150 and summary["epochs_run"] <= 15
    accuracy = held_out_accuracy(tmp_path, paths.model, 400)
    assert accuracy >= 0.9, (accuracy, summary["steps"])
