"""classify with torchvision's architectures: which builders take which inputs, one learning step each, RGB kept
RGB, aspect ratio kept, ink framing and polarity, the held-out distortion family, and normalisation statistics
from the data."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from conftest import make_task
from lifecycle.distortions import RandomDistortions
from lifecycle.tasks.classify.codec import channel_statistics, light_on_dark, to_square
from lifecycle.tasks.classify.config import ClassifyModel
from lifecycle.trainer import build_optimizer
from lifecycle.zoo import classification_builders

REFUSED_AT_64PX = {  # the constraint each one's refusal must name
    "inception_v3": "Output size is too small",
    "maxvit_t": "not divisible by partition size",
    "vit_h_14": "indivisible by patch size",
}


def test_every_torchvision_classifier_builds_at_the_input_size_or_is_refused_naming_why():
    builders = classification_builders()
    assert len(builders) >= 80 and "resnet18" in builders
    refused = {}
    for name in builders:
        try:
            ClassifyModel(arch=name, input_size=64, channels=3)
        except ValidationError as e:
            refused[name] = str(e)
    assert set(refused) == set(REFUSED_AT_64PX)
    for name, constraint in REFUSED_AT_64PX.items():
        assert f"arch: {name} cannot take 64x64 inputs" in refused[name] and constraint in refused[name]
    with pytest.raises(ValidationError, match="unknown architecture 'resnet19'"):
        ClassifyModel(arch="resnet19")


def tiny_params(arch: str, channels: int) -> dict:
    model = {"arch": arch, "channels": channels, "input_size": 32}
    return {"tasks": ["classify"], "classify": {"collect": {"classes": ["a", "b", "c"]}, "model": model}}


@pytest.mark.parametrize(
    ("arch", "channels"),
    [
        ("resnet18", 3),
        ("resnet18", 1),
        ("mobilenet_v3_small", 3),
        ("squeezenet1_0", 3),
        ("vit_b_16", 3),
        ("convnext_tiny", 3),
        ("builtin", 3),
    ],
)
def test_one_training_step_of_each_architecture_lowers_the_loss(arch, channels):
    torch.manual_seed(0)
    task = make_task(tiny_params(arch, channels))
    network, codec = task.network, task.codec
    model = network.build()
    images = [torch.randint(0, 256, (channels, 40, 48), dtype=torch.uint8) for _ in range(4)]
    inputs, targets = codec.collate([codec.transform(False)(x, y) for x, y in zip(images, [0, 1, 2, 0], strict=True)])
    assert inputs.shape == (4, channels, 32, 32)
    model.eval()  # batch-norm statistics fixed: the same function before and after the step
    first = network.forward(model, inputs)
    assert first.outputs.shape == (4, 3) and first.features.ndim == 2 and first.features.shape[0] == 4
    loss = network.loss(first.outputs, targets)
    assert torch.isfinite(loss)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        assert float(network.loss(network.forward(model, inputs).outputs, targets)) < float(loss)
    assert build_optimizer(model, task.cfg.train).param_groups  # the trainer's optimiser takes it


def jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_rgb_stays_rgb_and_grey_stays_grey():
    pixels = np.zeros((30, 50, 3), dtype=np.uint8)
    pixels[..., 0] = 220  # a red image
    rgb = make_task(tiny_params("resnet18", 3)).codec.decode(jpeg(pixels))
    assert rgb.shape == (3, 30, 50) and rgb[0].float().mean() > 200 > 30 > rgb[1:].float().mean()
    grey = make_task(tiny_params("builtin", 1)).codec.decode(jpeg(pixels))
    assert grey.shape == (1, 30, 50)


def test_aspect_ratio_is_kept_by_crop_and_by_pad():
    image = torch.zeros(1, 40, 80, dtype=torch.uint8)
    image[:, 10:30, 30:50] = 255  # a 20x20 white square in a 2:1 image
    cropped = to_square(image, 20, "crop")  # short side 40 -> 20: the square becomes 10x10, centred
    rows, cols = (cropped[0] > 127).any(dim=1).sum(), (cropped[0] > 127).any(dim=0).sum()
    assert cropped.shape == (1, 20, 20) and int(rows) == int(cols) == 10
    padded = to_square(image, 20, "pad")  # long side 80 -> 20: content 10 rows high, black bars above and below
    assert padded.shape == (1, 20, 20) and int(padded[0, :5].max()) == 0 and int(padded[0, 15:].max()) == 0
    rows, cols = (padded[0] > 127).any(dim=1).sum(), (padded[0] > 127).any(dim=0).sum()
    assert 5 <= int(rows) <= 6 and 5 <= int(cols) <= 6, "squashed, the square would be 5 high and 2-3 wide"


def test_ink_framing_fits_the_strokes_box_in_20_of_28_and_centres_their_mass():
    image = torch.zeros(1, 60, 90, dtype=torch.uint8)
    image[:, 5:45, 60:70] = 255  # a 40x10 bar, off-centre
    framed_image = to_square(image, 28, "ink")
    assert torch.equal(to_square(framed_image, 28, "ink"), framed_image), "a framed digit is left as it is"
    framed = framed_image[0].float()
    rows, cols = (framed > 127).any(dim=1).sum(), (framed > 127).any(dim=0).sum()
    assert framed.shape == (28, 28) and 19 <= int(rows) <= 21 and 4 <= int(cols) <= 6
    centre = [float((framed.sum(dim=d) * torch.arange(28)).sum() / framed.sum()) for d in (1, 0)]
    assert centre == pytest.approx([13.5, 13.5], abs=0.6)


def test_polarity_auto_turns_dark_strokes_on_light_into_light_on_dark():
    scan = torch.full((1, 20, 20), 230, dtype=torch.uint8)
    scan[:, 4:16, 9:11] = 20
    assert torch.equal(light_on_dark(scan), 255 - scan)
    assert torch.equal(light_on_dark(255 - scan), 255 - scan), "MNIST's polarity is kept"


def test_the_held_out_family_distorts_evaluation_inputs_and_no_training_input():
    params = tiny_params("builtin", 1)
    params["classify"].update(split={"robustness": "thickness"})
    params["classify"]["model"]["augment"] = {"blur": 0.5, "thickness": 0.0}
    codec = make_task(params).codec
    steps = codec.transform(train=True).augment.transforms
    assert [s.probabilities for s in steps if isinstance(s, RandomDistortions)] == [{"blur": 0.5}]
    assert codec.transform(train=False).augment is None
    family, distort = codec.held_out_distortion()
    image = torch.zeros(1, 12, 12, dtype=torch.uint8)
    image[:, 2:10, 5:7] = 255
    assert family == "thickness" and not torch.equal(distort(image, torch.Generator().manual_seed(0)), image)


def test_statistics_are_those_of_all_pixels_of_images_of_any_size():
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in ((10, 20), (33, 7), (5, 5))]
    mean, std = channel_statistics(images)
    pixels = torch.cat([x.reshape(3, -1) for x in images], dim=1).double() / 255
    assert mean == pytest.approx(pixels.mean(dim=1).tolist(), abs=1e-5)
    assert std == pytest.approx(pixels.std(dim=1, correction=0).tolist(), abs=1e-5)
    with pytest.raises(ValidationError, match="normalize has 2 values per list; channels is 3"):
        ClassifyModel(channels=3, normalize={"mean": [0.5, 0.5], "std": [0.2, 0.2]})
