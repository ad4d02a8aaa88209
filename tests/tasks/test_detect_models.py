"""detect with torchvision's detectors: every builder validated at load time, each listed one built from params, one
training step and one evaluation at 64 px, masks only where the architecture answers them, the refusals (unknown
builder, unknown builder arguments, a mask gate or `?mask=true` for a box-only one), and local initial weights."""

import copy

import pytest
import torch
from pydantic import ValidationError

from conftest import TINY_DETECT, make_task
from lifecycle.params import ConfigError
from lifecycle.samples import InvalidInput
from lifecycle.sources.scenes import SceneConfig, embedded_scenes
from lifecycle.tasks.detect.config import DetectModel
from lifecycle.tasks.detect.torchvision_models import instance_masks
from lifecycle.trainer import AmpStep, build_optimizer
from lifecycle.zoo import detection_builders

LISTED = {  # issue 18's detectors -> whether they answer masks
    "fasterrcnn_mobilenet_v3_large_320_fpn": False,
    "ssdlite320_mobilenet_v3_large": False,
    "maskrcnn_resnet50_fpn_v2": True,
    "fcos_resnet50_fpn": False,
    "retinanet_resnet50_fpn_v2": False,
    "fasterrcnn_resnet50_fpn_v2": False,
}
FEW_REGIONS = {  # R-CNN's region sampling sized for 2 tiny images, not COCO's 512 regions per image
    "box_batch_size_per_image": 16,
    "rpn_pre_nms_top_n_train": 100,
    "rpn_post_nms_top_n_train": 50,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50,
}


def params_for(arch: str, **model) -> dict:
    section = copy.deepcopy(TINY_DETECT)
    section["model"] = {"arch": arch, "input_size": 64, "score_threshold": 0.01, **model}
    section["promote"] = {"min": {"map_50": 0.1}}
    if "rcnn" in arch:
        section["model"].setdefault("builder_args", FEW_REGIONS)
    return {"tasks": ["detect"], "detect": section}


def test_every_torchvision_detector_validates_and_anything_else_is_refused_naming_the_key():
    builders = detection_builders()
    assert {name: builders[name] for name in LISTED} == LISTED and "keypointrcnn_resnet50_fpn" not in builders
    for name in builders:
        assert DetectModel(arch=name).masks == builders[name]
    assert DetectModel().masks, "the built-in network answers masks"
    refusals = {
        "arch: unknown architecture 'fasterrcnn_resnet51_fpn'": {"arch": "fasterrcnn_resnet51_fpn"},
        "builder_args: num_classes, weights_backbone: set by the pipeline": {
            "arch": "fcos_resnet50_fpn",
            "builder_args": {"num_classes": 3, "weights_backbone": "x"},
        },
        "builder_args: retinanet_resnet50_fpn_v2 does not take them": {
            "arch": "retinanet_resnet50_fpn_v2",
            "builder_args": {"box_batch_size_per_image": 16},  # R-CNN's, not RetinaNet's
        },
        "builder_args: only torchvision architectures take them": {"builder_args": {"x": 1}},
    }
    for message, model in refusals.items():
        with pytest.raises(ValidationError, match=message):
            DetectModel(**model)


def test_a_mask_gate_for_a_box_only_architecture_is_refused_at_load_time():
    params = params_for("ssdlite320_mobilenet_v3_large")
    params["detect"]["promote"]["min"]["mean_iou"] = 0.5
    with pytest.raises(ConfigError, match="promote.min.mean_iou: model.arch 'ssdlite320_mobilenet_v3_large' answers"):
        make_task(params, "detect")
    params = params_for("maskrcnn_resnet50_fpn_v2")
    params["detect"]["promote"]["max"] = {"mean_iou": 1.0}
    assert make_task(params, "detect").cfg.promote.max == {"mean_iou": 1.0}


@pytest.fixture(scope="module")
def scenes():
    """Two 64 px scenes with their labels, decoded."""
    from lifecycle.config import SplitConfig
    from lifecycle.imaging import decode_rgb

    found = embedded_scenes(2, SplitConfig(), [str(d) for d in range(10)], 0, SceneConfig(64, 1, 3, 12, 24))
    return [(decode_rgb(s.data, 4096), s.label) for s in found]


def boxes_only(label: dict) -> dict:
    return {k: v for k, v in label.items() if k != "mask"}


@pytest.mark.parametrize("arch", LISTED)
def test_each_listed_detector_builds_from_params_and_runs(arch, scenes):
    """A box-only architecture trains and evaluates on box-only labels (no class map), as COCO sets without
    segmentation give."""
    torch.manual_seed(0)
    task = make_task(params_for(arch), "detect")
    network, codec, masks = task.network, task.codec, LISTED[arch]
    if not masks:
        scenes = [(x, boxes_only(y)) for x, y in scenes]
    model = network.build()
    inputs, targets = codec.collate([codec.transform(True)(x, codec.encode_target(y)) for x, y in scenes])
    optimizer = build_optimizer(model, task.cfg.train, network.head_prefix(model))
    amp = AmpStep(torch.device("cpu"), "bf16")  # the trainer's step, under the CPU's mixed precision
    with amp.autocast():
        loss = network.loss(network.forward(model.train(), inputs).outputs, targets)
    before = [p.detach().clone() for p in model.parameters()]
    amp.step(loss, optimizer, model.parameters())
    assert torch.isfinite(loss) and any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    inputs, targets = codec.collate([codec.transform(False)(x, codec.encode_target(y)) for x, y in scenes])
    with torch.no_grad():
        forward = network.forward(model.eval(), inputs)
        assert torch.isfinite(network.loss(forward.outputs, targets)), "the validation loss"
    assert forward.features.shape[0] == 2 and forward.features.ndim == 2
    assert forward.outputs["det_boxes"].shape == (2, task.cfg.model.max_objects, 4)
    metrics = network.metrics()
    metrics.update(forward.outputs, targets)
    assert ("mean_iou" in metrics.compute()) == masks and "map_50" in metrics.compute()
    for prediction, (image, _) in zip(task.outputs.predict(forward.outputs), scenes, strict=True):
        assert all(o["label"] in task.cfg.collect.classes and len(o["box"]) == 4 for o in prediction["objects"])
        assert ("mask" in prediction) == masks
        if masks:
            assert prediction["mask"]["size"] == list(image.shape[-2:])
            assert "mask" in task.outputs.answer(prediction, {"mask": "true"})
        else:
            assert prediction["size"] == list(image.shape[-2:]) and task.outputs.answer(prediction, {}).keys() == {
                "objects"
            }


@pytest.mark.parametrize("arch", ["builtin", "maskrcnn_resnet50_fpn_v2"])
def test_an_architecture_that_learns_masks_refuses_a_box_only_label_naming_the_key(arch, scenes):
    codec = make_task(params_for(arch), "detect").codec
    with pytest.raises(ValueError, match=f"detect.model.arch '{arch}' learns masks, and this image is labeled"):
        codec.encode_target(boxes_only(scenes[0][1]))


def test_mask_true_on_a_box_only_architecture_is_a_400():
    outputs = make_task(params_for("fasterrcnn_mobilenet_v3_large_320_fpn"), "detect").outputs
    prediction = {"objects": [{"label": "3", "score": 0.9, "box": [1.0, 2.0, 30.0, 40.0]}], "size": [64, 64]}
    assert outputs.answer(prediction, {"mask": "false"}) == {"objects": prediction["objects"]}
    with pytest.raises(InvalidInput, match="answers boxes only") as refusal:
        outputs.answer(prediction, {"mask": "true"})
    assert refusal.value.status == 400


def test_instance_masks_are_each_objects_class_pixels_inside_its_box():
    class_map = torch.zeros(8, 8, dtype=torch.long)
    class_map[1:3, 1:3], class_map[4:7, 3:7] = 2, 5  # class indices 1 and 4, shifted past the background
    boxes = torch.tensor([[1.0, 1.0, 3.0, 3.0], [3.0, 4.0, 7.0, 7.0]])
    masks = instance_masks(class_map, boxes, torch.tensor([1, 4]))
    assert torch.equal(masks[0].bool(), class_map == 2) and torch.equal(masks[1].bool(), class_map == 5)


def test_local_weights_for_other_classes_load_beyond_the_head(tmp_path):
    arch = "fasterrcnn_mobilenet_v3_large_320_fpn"
    theirs = make_task(params_for(arch), "detect").network.build()  # ten classes
    torch.save({"model": theirs.net.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pth")
    params = params_for(arch, weights=str(tmp_path / "checkpoint.pth"))
    params["detect"]["collect"]["classes"] = ["cat", "dog"]
    model, loaded = make_task(params, "detect").network.pretrained()
    assert sorted(loaded["replaced"]) == [
        f"roi_heads.box_predictor.{k}.{p}" for k in ("bbox_pred", "cls_score") for p in ("bias", "weight")
    ]
    assert loaded["missing"] == [] and loaded["loaded"] == len(theirs.net.state_dict()) - 4
    backbone = "backbone.body.0.0.weight"
    assert torch.equal(model.net.state_dict()[backbone], theirs.net.state_dict()[backbone])


def test_a_detectors_weights_name_is_read_from_the_local_hub_cache_only(tmp_path, monkeypatch):
    from torchvision.models import get_weight

    arch, name = "ssdlite320_mobilenet_v3_large", "SSDLite320_MobileNet_V3_Large_Weights.COCO_V1"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    params = params_for(arch, weights=name)
    with pytest.raises(FileNotFoundError, match=f"place the file .* at {tmp_path}/hub/checkpoints/"):
        make_task(params, "detect").network.pretrained()
    coco = make_task(params_for(arch), "detect").network.build().net  # stands in for the COCO file: other classes
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(coco.state_dict(), tmp_path / "hub" / "checkpoints" / get_weight(name).url.rsplit("/", 1)[1])
    params["detect"]["collect"]["classes"] = ["cat", "dog"]
    _, loaded = make_task(params, "detect").network.pretrained()
    assert loaded["weights"] == name and loaded["replaced"] and loaded["missing"] == []
    assert all(k.startswith("head.classification_head.") for k in loaded["replaced"])


def test_a_box_only_prediction_pre_annotates_rectangles_for_label_studio(tmp_path):
    """... and the reviewed rectangles, with no brush, land as a box-only label: a COCO set without mask files."""
    import numpy as np

    from lifecycle.imaging import encode_png
    from lifecycle.tasks.parts import Landing

    task = make_task(params_for("fcos_resnet50_fpn"), "detect")
    prediction = {"objects": [{"label": "3", "score": 0.9, "box": [8.0, 16.0, 40.0, 48.0]}], "size": [64, 80]}
    (region,) = task.labeling.to_label_studio(prediction)
    assert region["type"] == "rectanglelabels" and (region["original_width"], region["original_height"]) == (80, 64)
    assert region["value"] | {"x": 10.0, "y": 25.0, "width": 40.0, "height": 50.0} == region["value"]
    image = encode_png(np.zeros((64, 80, 3), np.uint8))
    label = task.labeling.from_label_studio([region], image)
    assert label == {"boxes": [[8.0, 16.0, 40.0, 48.0]], "labels": ["3"]}
    landed = task.labeling.land(tmp_path, [Landing("one.png", image, label)])
    assert landed and not any("masks" in p.parts for p in landed) and not list(tmp_path.rglob("masks"))
