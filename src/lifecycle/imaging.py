"""Image helpers shared by the image tasks: checking, decoding, encoding and describing images."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


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


def load_gray(path: Path) -> torch.Tensor:
    """A stored image as a uint8 1xHxW tensor (any mode converted to 8-bit grayscale)."""
    return gray_tensor(Image.open(path))


def gray_tensor(img: Image.Image) -> torch.Tensor:
    with img:
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img, dtype=np.float64)
            peak = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
            arr = np.clip(arr / peak * 255.0, 0, 255).astype(np.uint8)
        else:
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                img = composite_on_white(img)
            arr = np.asarray(img.convert("L"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).unsqueeze(0)


def composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def image_descriptors(image: torch.Tensor) -> dict[str, float]:
    """Size, intensity mean and spread, and sharpness (variance of the Laplacian) of a uint8 CxHxW image."""
    gray = image.float().mean(dim=0) / 255.0
    laplacian = gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4 * gray[1:-1, 1:-1]
    return {
        "width": float(image.shape[-1]),
        "height": float(image.shape[-2]),
        "intensity_mean": float(gray.mean()),
        "intensity_std": float(gray.std()) if gray.numel() > 1 else 0.0,
        "sharpness": float(laplacian.var()) if laplacian.numel() > 1 else 0.0,
    }
