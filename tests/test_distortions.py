"""Each distortion family does what its name says on a tiny image, and the training augmentation applies the
families it is given with their probabilities."""

import pytest
import torch

from lifecycle.distortions import (
    FAMILIES,
    RandomDistortions,
    blur,
    contrast,
    distort,
    elastic,
    erase,
    noise,
    resolution,
    stroke_width,
)


def bar() -> torch.Tensor:
    """A 1x12x12 image: a vertical white stroke 2 pixels wide on black."""
    image = torch.zeros(1, 12, 12, dtype=torch.uint8)
    image[:, 2:10, 5:7] = 255
    return image


def ink(image: torch.Tensor) -> int:
    return int((image > 127).sum())


def test_stroke_width_thickens_and_thins():
    assert ink(stroke_width(bar(), 1.0)) > ink(bar()) > ink(stroke_width(bar(), -1.0))
    assert torch.equal(stroke_width(bar(), 0.0), bar())


def test_blur_spreads_the_ink_and_keeps_its_place():
    blurred = blur(bar(), 1.0)
    assert int(blurred.max()) < 255 and int((blurred > 0).sum()) > int((bar() > 0).sum())
    assert int(blurred[0, :, 5:7].sum()) > int(blurred[0, :, :5].sum())


def test_contrast_maps_black_and_white_to_background_and_ink():
    faded = contrast(bar(), ink=150, background=40)
    assert set(faded.unique().tolist()) == {40, 150}


def test_noise_has_the_asked_spread():
    noisy = noise(torch.full((1, 64, 64), 128, dtype=torch.uint8), 20, torch.Generator().manual_seed(0))
    assert float(noisy.float().std()) == pytest.approx(20, rel=0.1)


def test_erase_blanks_a_rectangle_of_about_the_share():
    white = torch.full((1, 20, 20), 255, dtype=torch.uint8)
    erased = erase(white, 0.1, torch.Generator().manual_seed(0))
    blank = erased[0] == 0
    assert 20 <= int(blank.sum()) <= 80
    rows, cols = blank.any(dim=1).sum(), blank.any(dim=0).sum()
    assert int(rows) * int(cols) == int(blank.sum()), "one rectangle"


def test_resolution_loses_detail_at_the_same_size():
    checker = ((torch.arange(12).view(-1, 1) + torch.arange(12)) % 2 * 255).to(torch.uint8).unsqueeze(0)
    low = resolution(checker, 6)
    assert low.shape == checker.shape and float(low.float().std()) < 0.2 * float(checker.float().std())


def test_elastic_bends_the_stroke_but_keeps_it_in_place():
    moved = elastic(bar(), 2.0, 3.0, torch.Generator().manual_seed(0))
    assert moved.shape == bar().shape and not torch.equal(moved, bar()) and ink(moved) > 0
    column = (moved[0].float().sum(dim=0) * torch.arange(12)).sum() / moved.float().sum()
    assert abs(float(column) - 5.5) < 1.5, "a displacement of ~2 pixels, not a different picture"


def test_every_family_is_deterministic_under_a_seed_and_keeps_dtype():
    for family in FAMILIES:
        first = distort(bar(), family, torch.Generator().manual_seed(3))
        again = distort(bar(), family, torch.Generator().manual_seed(3))
        assert first.dtype == torch.uint8 and first.shape == bar().shape and torch.equal(first, again), family
    with pytest.raises(ValueError, match="unknown distortion family 'wobble'"):
        distort(bar(), "wobble")


def test_random_distortions_apply_each_family_with_its_probability():
    assert torch.equal(RandomDistortions({"blur": 0.0})(bar()), bar())
    torch.manual_seed(0)
    assert not torch.equal(RandomDistortions({"blur": 1.0})(bar()), bar())
    assert RandomDistortions({"blur": 0.5, "noise": 0.0}).probabilities == {"blur": 0.5}
