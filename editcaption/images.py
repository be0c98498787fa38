"""Decoding policy for image pairs: what is refused, and how everything else becomes upright RGB.

Pairs arrive from scraped datasets, phones and renderers, so the decoder is the first line of defence:
it refuses files that would exhaust memory or are not what they claim to be, with a reason from
`schema.QUARANTINE_REASONS`, and it applies EXIF orientation, because an image shown rotated or
mirrored turns a correct "to the viewer's left" into a wrong one.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, Field

from editcaption.schema import QUARANTINE_REASONS

# Deflate cannot shrink real pixel data much below one byte per ~1000 pixels; a file that declares
# more pixels than the policy allows *and* is that small is a crafted fill meant to exhaust memory.
BOMB_PIXELS_PER_BYTE = 1000

_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_WHITE = (255, 255, 255)


class ImagePolicy(BaseModel, extra="forbid"):
    """Which images a pipeline accepts; the defaults fit photographs and rendered edit datasets."""

    max_pixels: int = Field(
        default=36_000_000, gt=0, description="Refuse images with more pixels than this (width x height)."
    )
    min_side: int = Field(default=16, gt=0, description="Refuse images whose shorter side is below this.")
    max_aspect: float = Field(
        default=8.0, ge=1.0, description="Refuse images whose long side / short side exceeds this."
    )
    size_mismatch_tolerance: float = Field(
        default=0.15,
        ge=0.0,
        description="Refuse pairs whose aspect ratios differ by more than this: "
        "max(ar_source, ar_target) / min(ar_source, ar_target) - 1.",
    )
    reject_identical: bool = Field(
        default=True, description="Refuse pairs whose source and target pixels are equal: that is no edit."
    )


class ImageRejected(Exception):
    """An image or pair the policy refuses; `reason` is a quarantine reason, `detail` says specifically why."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in QUARANTINE_REASONS:
            raise ValueError(f"unknown quarantine reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@contextmanager
def _strict_pillow() -> Iterator[None]:
    """Make Pillow refuse truncated files and oversized headers, restoring its settings afterwards."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def decode_image(data: bytes, policy: ImagePolicy, role: str = "source") -> Image.Image:
    """Decode one encoded image into upright RGB, or raise ImageRejected.

    Sizes are checked from the header before any pixel is decoded. A file is a `decompression_bomb`
    (rather than `too_many_pixels`) when Pillow itself calls it one, or when it declares more than
    `max_pixels` while holding under one byte per `BOMB_PIXELS_PER_BYTE` declared pixels.
    """
    if not data:
        raise ImageRejected("empty_file", f"{role}: zero bytes")
    with _strict_pillow():
        try:
            img = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejected("decompression_bomb", f"{role}: {len(data)} bytes; {exc}") from exc
        except UnidentifiedImageError as exc:
            raise ImageRejected(
                "not_an_image", f"{role}: {len(data)} bytes, no decoder recognises them"
            ) from exc
        except (OSError, SyntaxError, EOFError, ValueError) as exc:
            # A decoder recognised the format but could not read its header: the file was cut short.
            raise ImageRejected(
                "truncated_image", f"{role}: {len(data)} bytes, header unreadable: {exc}"
            ) from exc
        _check_header(img, len(data), policy, role)
        try:
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejected("decompression_bomb", f"{role}: {exc}") from exc
        except (OSError, SyntaxError, EOFError, ValueError) as exc:
            raise ImageRejected(
                "truncated_image", f"{role}: {img.format} {img.width}x{img.height}, pixels unreadable: {exc}"
            ) from exc
    upright = ImageOps.exif_transpose(img)
    return to_rgb(upright)


def _check_header(img: Image.Image, nbytes: int, policy: ImagePolicy, role: str) -> None:
    width, height = img.size
    pixels = width * height
    size = f"{role}: {img.format} {width}x{height}"
    if pixels > policy.max_pixels:
        if pixels > nbytes * BOMB_PIXELS_PER_BYTE:
            raise ImageRejected(
                "decompression_bomb", f"{size} declares {pixels} pixels in only {nbytes} bytes"
            )
        raise ImageRejected("too_many_pixels", f"{size} = {pixels} pixels > max_pixels {policy.max_pixels}")
    if min(width, height) < policy.min_side:
        raise ImageRejected("too_small", f"{size}, shorter side < min_side {policy.min_side}")
    aspect = max(width, height) / min(width, height)
    if aspect > policy.max_aspect:
        raise ImageRejected("absurd_aspect", f"{size}, aspect {aspect:.2f} > max_aspect {policy.max_aspect}")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: transparency composited on white, high bit depths rescaled."""
    if img.mode == "RGB" and "transparency" not in img.info:
        return img
    if img.mode.startswith("I") or img.mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(img), img.mode), mode="L").convert("RGB")
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Rescale one-channel integer or float pixels to 0-255 without clipping the top of the range.

    16-bit modes divide by 257 (65535 -> 255). 32-bit integers use the smallest standard range that
    holds them (8-bit, then 16-bit), else their own min-max. Floats in [0, 1] are treated as
    normalised, floats in [0, 255] as 8-bit, anything else by min-max.
    """
    if mode.startswith("I;16"):
        return np.round(values.astype(np.float64) / 257.0).astype(np.uint8)
    data = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    if mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = data * 255.0
    elif low >= 0.0 and high <= 255.0:
        scaled = data
    elif mode != "F" and low >= 0.0 and high <= 65535.0:
        scaled = data / 257.0
    else:
        scaled = (data - low) * (255.0 / (high - low))
    return np.round(scaled).clip(0, 255).astype(np.uint8)


def check_pair(source: bytes, target: bytes, policy: ImagePolicy) -> tuple[Image.Image, Image.Image]:
    """Decode both images of a pair and check they form a plausible edit, or raise ImageRejected."""
    src = decode_image(source, policy, role="source")
    tgt = decode_image(target, policy, role="target")
    ar_src, ar_tgt = src.width / src.height, tgt.width / tgt.height
    mismatch = max(ar_src, ar_tgt) / min(ar_src, ar_tgt) - 1.0
    if mismatch > policy.size_mismatch_tolerance:
        raise ImageRejected(
            "size_mismatch",
            f"source {src.width}x{src.height} vs target {tgt.width}x{tgt.height}: aspect ratios differ "
            f"by {mismatch:.1%} > {policy.size_mismatch_tolerance:.1%}",
        )
    if policy.reject_identical and src.size == tgt.size and src.tobytes() == tgt.tobytes():
        raise ImageRejected(
            "identical_images", f"source and target have equal pixels ({src.width}x{src.height})"
        )
    return src, tgt


def budget_size(
    width: int, height: int, max_pixels: int, min_pixels: int = 4 * 32 * 32, factor: int = 32
) -> tuple[int, int]:
    """(width, height) with both sides multiples of `factor`, area in [min_pixels, max_pixels], aspect kept.

    Vision encoders like Qwen-VL's cut images into factor x factor cells; sizing here, before the
    engine, keeps the number of image tokens within the model's budget. Like Qwen-VL's smart resize:
    round each side to the grid, rescale both sides when the area leaves the range, step one side at a
    time until the area is in range, then take single steps while they bring the aspect closer.
    `max_pixels` always holds; `min_pixels` too unless no grid step fits between the two.
    """
    if max_pixels < factor * factor or min_pixels > max_pixels:
        raise ValueError(f"no size fits: factor {factor}, min_pixels {min_pixels}, max_pixels {max_pixels}")
    w = max(factor, round(width / factor) * factor)
    h = max(factor, round(height / factor) * factor)
    if w * h > max_pixels:
        beta = math.sqrt(width * height / max_pixels)
        w = max(factor, math.floor(width / beta / factor) * factor)
        h = max(factor, math.floor(height / beta / factor) * factor)
    elif w * h < min_pixels:
        beta = math.sqrt(min_pixels / (width * height))
        w = math.ceil(width * beta / factor) * factor
        h = math.ceil(height * beta / factor) * factor
    aspect = width / height

    def distortion(size: tuple[int, int]) -> float:
        return abs(math.log(size[0] / size[1] / aspect))

    while w * h > max_pixels:
        steps = [step for step in ((w - factor, h), (w, h - factor)) if min(step) >= factor]
        w, h = min(steps, key=distortion)
    while w * h < min_pixels:
        steps = [step for step in ((w + factor, h), (w, h + factor)) if step[0] * step[1] <= max_pixels]
        if not steps:
            break
        w, h = min(steps, key=distortion)
    # Flooring or ceiling both sides can distort the aspect by a cell; take single steps that reduce it.
    while True:
        steps = [
            step
            for step in ((w + factor, h), (w, h + factor), (w - factor, h), (w, h - factor))
            if min(step) >= factor
            and min(min_pixels, w * h) <= step[0] * step[1] <= max_pixels
            and distortion(step) < distortion((w, h)) - 1e-12
        ]
        if not steps:
            return w, h
        w, h = min(steps, key=distortion)


def fit_to_pixel_budget(
    img: Image.Image, max_pixels: int, min_pixels: int = 4 * 32 * 32, factor: int = 32
) -> Image.Image:
    """Resize (bicubic) to `budget_size`; returns the image itself when it already fits."""
    size = budget_size(img.width, img.height, max_pixels, min_pixels, factor)
    if size == img.size:
        return img
    return img.resize(size, Image.Resampling.BICUBIC)


def encode_png(img: Image.Image) -> bytes:
    """Lossless bytes for a decoded image (used where pixels were changed, e.g. split halves)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
