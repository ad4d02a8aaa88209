"""Named families of image distortions for light strokes on a dark background (MNIST's polarity): small
functions on uint8 CxHxW tensors, each drawing its strength from a fixed range. Training draws augmentations
from them; evaluation holds one family out and measures the model on the test split distorted by it, a family
training never applied (leave-one-family-out)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, get_args

import torch
import torch.nn.functional as F

Family = Literal["thickness", "elastic", "blur", "contrast", "noise", "erase", "resolution"]
FAMILIES: tuple[str, ...] = get_args(Family)

# torchvision.transforms.v2 transforms (train.augment) that apply a family themselves
V2_FAMILIES = {
    "ElasticTransform": "elastic",
    "GaussianBlur": "blur",
    "ColorJitter": "contrast",
    "RandomAutocontrast": "contrast",
    "RandomEqualize": "contrast",
    "GaussianNoise": "noise",
    "RandomErasing": "erase",
}


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _as_uint8(image: torch.Tensor) -> torch.Tensor:
    return image.round().clamp(0, 255).to(torch.uint8)


def stroke_width(image: torch.Tensor, amount: float) -> torch.Tensor:
    """Strokes thickened (amount > 0) or thinned (< 0) by a grey dilation or erosion with a 3x3 cross, mixed
    in by |amount| (1: one pixel on each side)."""
    pixels = image.float().unsqueeze(0)
    sign = 1.0 if amount >= 0 else -1.0
    padded = F.pad(sign * pixels, (1, 1, 1, 1), value=0.0 if sign > 0 else -255.0)
    h, w = pixels.shape[-2:]
    shifted = [padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in _CROSS]
    moved = sign * torch.stack(shifted).amax(dim=0)
    share = min(abs(amount), 1.0)
    return _as_uint8((pixels + share * (moved - pixels))[0])


_CROSS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


def elastic(image: torch.Tensor, alpha: float, sigma: float, generator: torch.Generator | None) -> torch.Tensor:
    """Simard's elastic distortion: every pixel displaced by a smooth random field (Gaussian of width `sigma`
    pixels) of peak size about `alpha` pixels."""
    from torchvision.transforms.v2 import functional as TF

    h, w = image.shape[-2:]
    field = torch.rand(2, 1, h, w, generator=generator) * 2 - 1
    size = 2 * math.ceil(3 * sigma) + 1
    field = TF.gaussian_blur(field, [size, size], [sigma, sigma])
    field = field / field.abs().amax().clamp_min(1e-6) * alpha
    scale = torch.tensor([2.0 / w, 2.0 / h]).view(1, 1, 1, 2)  # pixels -> grid_sample's [-1, 1] units
    displacement = torch.stack([field[0, 0], field[1, 0]], dim=-1).unsqueeze(0) * scale
    return TF.elastic(image, displacement, fill=0)


def blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    size = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(image, [size, size], [sigma, sigma])


def contrast(image: torch.Tensor, ink: float, background: float) -> torch.Tensor:
    """Faded ink on a grey background: 0 becomes `background`, 255 becomes `ink` (both in [0, 255])."""
    return _as_uint8(background + image.float() / 255.0 * (ink - background))


def noise(image: torch.Tensor, std: float, generator: torch.Generator | None) -> torch.Tensor:
    return _as_uint8(image.float() + torch.randn(image.shape, generator=generator) * std)


def erase(image: torch.Tensor, share: float, generator: torch.Generator | None) -> torch.Tensor:
    """A random rectangle of about `share` of the image blanked to the background."""
    h, w = image.shape[-2:]
    eh = max(1, round(h * math.sqrt(share) * _uniform(0.7, 1.3, generator)))
    ew = max(1, min(w, round(h * w * share / eh)))
    eh = min(eh, h)
    top = int(torch.randint(0, h - eh + 1, (), generator=generator))
    left = int(torch.randint(0, w - ew + 1, (), generator=generator))
    out = image.clone()
    out[..., top : top + eh, left : left + ew] = 0
    return out


def resolution(image: torch.Tensor, side: int) -> torch.Tensor:
    """A low-resolution capture: the image down to `side` pixels on its long side and back up."""
    from torchvision.transforms.v2 import functional as TF

    h, w = image.shape[-2:]
    scale = side / max(h, w)
    small = TF.resize(image, [max(1, round(h * scale)), max(1, round(w * scale))], antialias=True)
    return TF.resize(small, [h, w], antialias=False)


def distort(image: torch.Tensor, family: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """`image` distorted by one family at a strength drawn from the family's range."""
    if family not in FAMILIES:
        raise ValueError(f"unknown distortion family '{family}'; choose from {', '.join(FAMILIES)}")
    return _DRAWS[family](image, generator)


def _thickness(image: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    if float(torch.rand((), generator=g)) < 0.5:
        return stroke_width(image, _uniform(0.5, 1.0, g))
    return stroke_width(image, -_uniform(0.3, 0.6, g))


_DRAWS: dict[str, Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]] = {
    "thickness": _thickness,
    "elastic": lambda x, g: elastic(x, _uniform(2.5, 4.0, g), 3.0, g),
    "blur": lambda x, g: blur(x, _uniform(0.8, 1.4, g)),
    "contrast": lambda x, g: contrast(x, _uniform(110, 200, g), _uniform(0, 60, g)),
    "noise": lambda x, g: noise(x, _uniform(15, 35, g), g),
    "erase": lambda x, g: erase(x, _uniform(0.08, 0.15, g), g),
    "resolution": lambda x, g: resolution(x, int(torch.randint(10, 15, (), generator=g))),
}


class RandomDistortions:
    """A training augmentation: each named family applied with its probability, in FAMILIES order (a callable
    on uint8 CxHxW tensors, as a `v2.Compose` step). Draws from torch's global generator, like torchvision's
    transforms, so the trainer's seed fixes it."""

    def __init__(self, probabilities: dict[str, float]) -> None:
        unknown = set(probabilities) - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown distortion families {sorted(unknown)}; choose from {', '.join(FAMILIES)}")
        self.probabilities = {f: probabilities[f] for f in FAMILIES if probabilities.get(f, 0) > 0}

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        for family, p in self.probabilities.items():
            if float(torch.rand(())) < p:
                image = distort(image, family)
        return image

    def __repr__(self) -> str:
        return f"RandomDistortions({self.probabilities})"
