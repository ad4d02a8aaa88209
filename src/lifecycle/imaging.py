"""Image helpers shared by the image tasks: checking, decoding, encoding and describing images."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from lifecycle.samples import InvalidInput

_STACK_ELEMENTS = 2**16  # pixel values described in one stack: small images are stacked, large ones go alone
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def inspect_image(data: bytes) -> dict[str, Any]:
    """Width, height and mode of an image; raises ValueError when it cannot be fully decoded."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decodes every pixel: truncated files fail here, not at training time
            return {"width": img.width, "height": img.height, "mode": img.mode}
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"unreadable image: {e}") from None


def encode_png(pixels: np.ndarray) -> bytes:
    """Lossless, deterministic PNG bytes (no timestamps) of a uint8 HxW or HxWxC array."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def encode_png_tensor(image: torch.Tensor) -> bytes:
    """PNG bytes of a uint8 1xHxW (grey) or 3xHxW (RGB) image tensor."""
    pixels = image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)
    return encode_png(pixels.numpy())


def decode_gray(data: bytes, max_side: int) -> torch.Tensor:
    """Image bytes as a uint8 1xHxW tensor: any mode converted to 8-bit grayscale (CMYK, 16-bit, palette;
    transparency composited on white). Raises InvalidInput for empty, unidentifiable, oversized or corrupt data;
    the size is checked from the header, before any pixel is decoded."""
    return _decode(data, max_side, gray_tensor)


def decode_rgb(data: bytes, max_side: int) -> torch.Tensor:
    """Image bytes as a uint8 3xHxW RGB tensor, with the conversions and checks of `decode_gray`."""
    return _decode(data, max_side, rgb_tensor)


def _decode(data: bytes, max_side: int, to_tensor: Callable[[Image.Image], torch.Tensor]) -> torch.Tensor:
    if not data:
        raise InvalidInput("empty file: no image bytes received")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InvalidInput(
            "not an image: the file is not in a format Pillow recognises (send PNG or JPEG)", 415
        ) from None
    except _DECODE_ERRORS as e:
        raise InvalidInput(f"unreadable image: {e}") from None
    if max(img.size) > max_side:
        raise InvalidInput(f"image is {img.width}x{img.height} pixels; the largest accepted side is {max_side}", 413)
    try:
        img.load()  # decodes every pixel: a truncated file fails here
        return to_tensor(img)
    except _DECODE_ERRORS as e:
        raise InvalidInput(f"truncated or corrupt {img.format or ''} image: {e}".replace("  ", " ")) from None


def gray_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(_pixels(img, "L").copy()).unsqueeze(0)


def rgb_tensor(img: Image.Image) -> torch.Tensor:
    pixels = _pixels(img, "RGB")
    return torch.from_numpy((np.repeat(pixels[..., None], 3, axis=-1) if pixels.ndim == 2 else pixels).copy()).permute(
        2, 0, 1
    )


def _pixels(img: Image.Image, mode: str) -> np.ndarray:
    """8-bit pixels in `mode` (L or RGB); 16-bit and float images are scaled to 8 bits (as grey)."""
    with img:
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            arr = np.asarray(img, dtype=np.float64)
            peak = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
            return np.clip(arr / peak * 255.0, 0, 255).astype(np.uint8)
        if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
            img = composite_on_white(img)
        elif img.mode == "CMYK":
            img = img.convert("RGB")
        return np.asarray(img.convert(mode), dtype=np.uint8)


def composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def image_descriptors(images: Sequence[torch.Tensor]) -> list[dict[str, float]]:
    """Size, intensity mean and spread, and sharpness (variance of the Laplacian) of each uint8 CxHxW image. Images
    of one shape are described together, a cache-sized stack in a few NumPy operations: a small image's arithmetic
    costs less than the operations' overhead (40 us for a 28x28 image described alone, 10 us in a stack). Each
    image's figures are the same whatever it is described with."""
    described: list[dict[str, float]] = [{} for _ in images]
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        by_shape.setdefault(tuple(image.shape), []).append(i)
    for (channels, height, width), same_shape in by_shape.items():
        step = max(1, _STACK_ELEMENTS // (channels * height * width))
        for start in range(0, len(same_shape), step):
            indices = same_shape[start : start + step]
            stats = _stack_descriptors(np.stack([images[i].numpy() for i in indices]))
            for i, (mean, std, sharpness) in zip(indices, stats, strict=True):
                described[i] = {
                    "width": float(width),
                    "height": float(height),
                    "intensity_mean": mean,
                    "intensity_std": std,
                    "sharpness": sharpness,
                }
    return described


def _stack_descriptors(pixels: np.ndarray) -> list[tuple[float, float, float]]:
    """(intensity mean, intensity spread, sharpness) of each image of a uint8 NxCxHxW stack."""
    gray = pixels.mean(axis=1, dtype=np.float32) / np.float32(255.0)
    laplacian = (
        gray[:, :-2, 1:-1] + gray[:, 2:, 1:-1] + gray[:, 1:-1, :-2] + gray[:, 1:-1, 2:] - 4 * gray[:, 1:-1, 1:-1]
    )
    plane = (1, 2)
    mean = gray.mean(axis=plane)
    std = gray.std(axis=plane, ddof=1) if gray[0].size > 1 else np.zeros(len(gray), np.float32)
    sharpness = laplacian.var(axis=plane, ddof=1) if laplacian[0].size > 1 else np.zeros(len(gray), np.float32)
    return list(zip(mean.tolist(), std.tolist(), sharpness.tolist(), strict=True))


IMAGE_SHIFTS = ("none", "noise", "blur", "invert", "rotate", "scale")


def shift_image(image: torch.Tensor, kind: str, rng: np.random.Generator) -> torch.Tensor:
    """A uint8 CxHxW image as production might send it after the world changed (for demonstrations and tests)."""
    from torchvision.transforms.v2 import functional as TF

    if kind == "none":
        return image
    if kind == "noise":
        noise = torch.from_numpy(rng.normal(0, 64, tuple(image.shape))).float()
        return (image.float() + noise).clamp(0, 255).to(torch.uint8)
    if kind == "blur":
        return TF.gaussian_blur(image, kernel_size=[5, 5], sigma=[1.5, 1.5])
    if kind == "invert":
        return 255 - image
    if kind == "rotate":
        return TF.rotate(image, float(rng.choice([-1, 1]) * rng.uniform(60, 120)))
    if kind == "scale":
        return TF.affine(image, angle=0.0, translate=[0, 0], scale=0.5, shear=[0.0, 0.0])
    raise ValueError(f"unknown shift '{kind}'; choose from {', '.join(IMAGE_SHIFTS)}")
