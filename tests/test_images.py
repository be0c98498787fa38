"""Decoding policy: mode conversion, EXIF orientation, refusals with their reasons, pixel budgets."""

from __future__ import annotations

import io
import random
import warnings

import numpy as np
import pytest
from bad_pairs import EXIF_ORIENTATION, MARKER, POLICY, encode, exif_rotated_jpeg, png_bomb, scene
from PIL import Image, ImageFile

from editcaption.images import (
    ImagePolicy,
    ImageRejected,
    budget_size,
    check_pair,
    decode_image,
    encode_png,
    fit_to_pixel_budget,
    to_rgb,
)

# Modes as they come out of files, and a format that stores each.
MODES = {
    "1": "PNG",
    "L": "PNG",
    "LA": "PNG",
    "P": "PNG",
    "PA": "TIFF",
    "RGB": "PNG",
    "RGBA": "PNG",
    "CMYK": "JPEG",
    "I;16": "PNG",
    "I": "TIFF",
    "F": "TIFF",
    "YCbCr": "TIFF",
    "LAB": "TIFF",
}


def rejection(data: bytes, policy: ImagePolicy = POLICY) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        decode_image(data, policy)
    return info.value


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_decodes_to_rgb(mode: str) -> None:
    img = scene((64, 48)).convert(mode) if mode not in ("I;16", "I", "F", "PA") else Image.new(mode, (64, 48))
    data = encode(img, MODES[mode])
    assert Image.open(io.BytesIO(data)).mode == mode
    out = decode_image(data, ImagePolicy())
    assert out.mode == "RGB" and out.size == (64, 48)


def test_alpha_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 0, 0, 128))
    out = decode_image(encode(rgba), ImagePolicy())
    assert out.getpixel((0, 0)) == (255, 0, 0)
    assert out.getpixel((5, 5)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == (127, 127, 127)
    la = Image.new("LA", (32, 32), (0, 0))
    assert decode_image(encode(la), ImagePolicy()).getpixel((3, 3)) == (255, 255, 255)


def test_palette_transparency_is_white() -> None:
    img = Image.new("P", (32, 32), 1)
    img.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.info["transparency"] = 0
    out = decode_image(encode(img), ImagePolicy())
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((5, 5)) == (200, 10, 10)


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257, 32768, 65535] * 8] * 32, dtype=np.uint16)
    out = np.asarray(decode_image(encode(Image.fromarray(values)), ImagePolicy()))[0, :4, 0]
    assert out.tolist() == [0, 1, 128, 255]


def test_wide_integer_and_float_ranges() -> None:
    as_16bit = to_rgb(Image.fromarray(np.array([[0, 65535]], dtype=np.int32), mode="I"))
    assert as_16bit.getpixel((1, 0)) == (255, 255, 255)
    as_8bit = to_rgb(Image.fromarray(np.array([[0, 200]], dtype=np.int32), mode="I"))
    assert as_8bit.getpixel((1, 0)) == (200, 200, 200)
    unit = to_rgb(Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F"))
    assert [unit.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    signed = to_rgb(Image.fromarray(np.array([[-1000.0, 0.0, 1000.0]], dtype=np.float32), mode="F"))
    assert [signed.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_cmyk_converts_to_its_rgb_colour() -> None:
    cyan = Image.new("CMYK", (32, 32), (255, 0, 0, 0))
    assert decode_image(encode(cyan, "TIFF"), ImagePolicy()).getpixel((4, 4)) == (0, 255, 255)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation: int) -> None:
    upright = scene((96, 64))
    # The stored pixels are the upright image turned by the inverse of what the tag asks for.
    inverse = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_90,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270,
    }
    stored = upright.transpose(inverse[orientation]) if orientation in inverse else upright
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    out = decode_image(encode(stored, exif=exif.tobytes()), ImagePolicy())
    assert out.size == (96, 64)
    assert out.tobytes() == upright.tobytes()


def test_exif_rotated_jpeg_marker_is_top_left() -> None:
    out = decode_image(exif_rotated_jpeg(scene()), ImagePolicy())
    assert out.size == (256, 192)
    assert np.abs(np.subtract(out.getpixel((5, 5)), MARKER)).max() < 20
    assert np.abs(np.subtract(out.getpixel((250, 186)), MARKER)).max() > 60


def test_each_image_rejection_reason() -> None:
    png = encode(scene())
    jpeg = encode(scene(), "JPEG")
    cases = {
        "empty_file": b"",
        "not_an_image": b"<html>not found</html>" * 10,
        "truncated_image": png[: len(png) // 2],
        "decompression_bomb": png_bomb(),
        "too_many_pixels": encode(scene((640, 480)), "JPEG"),
        "too_small": encode(scene((4, 4))),
        "absurd_aspect": encode(scene((2000, 20))),
    }
    for reason, data in cases.items():
        error = rejection(data)
        assert error.reason == reason, (reason, error.detail)
        assert error.detail.startswith("source")
    assert rejection(jpeg[: len(jpeg) // 2]).reason == "truncated_image"


@pytest.mark.parametrize(
    ("width", "height", "reason"),
    [
        (20_000, 20_000, "decompression_bomb"),  # Pillow's own error
        (10_000, 10_000, "decompression_bomb"),  # Pillow's warning, raised as an error
        (7_000, 7_000, "decompression_bomb"),  # over the policy and far too few bytes for its pixels
    ],
)
def test_decompression_bombs(width: int, height: int, reason: str) -> None:
    assert rejection(png_bomb(width, height), ImagePolicy()).reason == reason


def test_pillow_state_is_left_alone() -> None:
    filters = list(warnings.filters)
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        png = encode(scene())
        assert rejection(png[: len(png) // 2]).reason == "truncated_image"
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    rejection(png_bomb(10_000, 10_000))
    assert warnings.filters == filters


def test_check_pair_reasons() -> None:
    a, b = encode(scene(seed=1)), encode(scene(seed=2))
    src, tgt = check_pair(a, b, POLICY)
    assert src.size == tgt.size == (256, 192)
    with pytest.raises(ImageRejected) as info:
        check_pair(a, encode(scene((192, 256), 2)), POLICY)
    assert info.value.reason == "size_mismatch"
    with pytest.raises(ImageRejected) as info:
        check_pair(a, encode(scene(seed=1), compress_level=1), POLICY)
    assert info.value.reason == "identical_images"
    check_pair(a, a, POLICY.model_copy(update={"reject_identical": False}))
    check_pair(a, encode(scene((256, 180), 2)), POLICY)  # 6% aspect difference is within tolerance
    with pytest.raises(ImageRejected) as info:
        check_pair(a, b"", POLICY)
    assert info.value.reason == "empty_file" and info.value.detail.startswith("target")


def test_policy_and_reasons_are_strict() -> None:
    with pytest.raises(ValueError):
        ImagePolicy(max_pixel=5)
    with pytest.raises(ValueError):
        ImageRejected("blurry", "not a reason")


def test_budget_size_properties() -> None:
    rng = random.Random(0)
    for _ in range(5000):
        w, h = rng.randint(16, 6000), rng.randint(16, 6000)
        if max(w, h) / min(w, h) > 8:
            continue
        factor = rng.choice((14, 28, 32))
        max_pixels = rng.randint(64, 2048) * factor * factor
        min_pixels = rng.randint(4, 64) * factor * factor
        if min_pixels > max_pixels:
            continue
        bw, bh = budget_size(w, h, max_pixels, min_pixels, factor)
        assert bw % factor == 0 and bh % factor == 0
        assert min_pixels <= bw * bh <= max_pixels, (w, h, bw, bh)
        assert bw * bh >= 0.5 * min(w * h, max_pixels)  # no needless shrinking
        # Rounding each side to the grid moves the aspect by at most one cell on the shorter side.
        assert abs(bw / bh - w / h) <= (w / h) * (2 * factor / min(bw, bh)) + 1e-9


def test_budget_size_extremes() -> None:
    assert budget_size(640, 480, 1024 * 1024) == (640, 480)
    assert budget_size(10, 10, 64 * 64, min_pixels=32 * 32 * 4) == (64, 64)
    assert budget_size(100_000, 32, 32 * 32 * 16) == (512, 32)
    with pytest.raises(ValueError):
        budget_size(100, 100, max_pixels=100)


def test_fit_to_pixel_budget() -> None:
    img = scene((1000, 750))
    out = fit_to_pixel_budget(img, max_pixels=256 * 256)
    assert out.width % 32 == 0 and out.height % 32 == 0 and out.width * out.height <= 256 * 256
    assert abs(out.width / out.height - 4 / 3) < 0.1
    same = scene((256, 192))
    assert fit_to_pixel_budget(same, max_pixels=256 * 256) is same


def test_encode_png_roundtrip() -> None:
    img = scene()
    assert Image.open(io.BytesIO(encode_png(img))).tobytes() == img.tobytes()
