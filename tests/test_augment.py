"""Mirrored augmentation: pixels and directions both mirrored; text-bearing and direction-free refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from editcaption.checks.augment import mirrored_record
from editcaption.schema import SFTRecord


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def record(instruction: str, **extra: object) -> dict:
    source = np.zeros((20, 30, 3), np.uint8)
    source[5, 2] = (255, 0, 0)  # a red pixel near the left edge
    target = np.zeros((20, 30, 3), np.uint8)
    target[5, 7] = (0, 255, 0)
    return {
        "pair_id": "pair-1",
        "source": png(source),
        "target": png(target),
        "instruction": instruction,
        "origin": "synthesis",
        "model": "annotator",
        "overall": 8.5,
        **extra,
    }


def test_mirrored_record_flips_pixels_and_swaps_the_instruction() -> None:
    original = record("Move the red dot to the viewer's Right, then turn it clockwise.")
    mirrored = mirrored_record(original)
    assert mirrored is not None
    assert mirrored["pair_id"] == "pair-1:mirror"
    assert mirrored["origin"] == "augmentation"
    assert mirrored["instruction"] == "Move the red dot to the viewer's Left, then turn it counter-clockwise."
    source, target = pixels(mirrored["source"]), pixels(mirrored["target"])
    assert tuple(source[5, 27]) == (255, 0, 0) and tuple(source[5, 2]) == (0, 0, 0)
    assert tuple(target[5, 22]) == (0, 255, 0)
    assert np.array_equal(source, pixels(original["source"])[:, ::-1])
    assert mirrored["model"] == "annotator" and mirrored["overall"] is None
    SFTRecord.model_validate(mirrored)


def test_extra_fields_are_carried_over() -> None:
    mirrored = mirrored_record(record("Move it to the left.", review="approved"))
    assert mirrored is not None and mirrored["review"] == "approved"


@pytest.mark.parametrize(
    "instruction",
    [
        "Change the sign on the left to read OPEN.",
        "Add the word SALE on the viewer's right.",
        "Move the logo to the right.",
        "Set the clock on the left wall to noon.",
    ],
)
def test_text_bearing_records_are_refused(instruction: str) -> None:
    assert mirrored_record(record(instruction)) is None


@pytest.mark.parametrize(
    "instruction", ["Make the dot red.", "Move the dot up.", "Keep what is left unchanged and brighten it."]
)
def test_direction_free_records_are_refused(instruction: str) -> None:
    assert mirrored_record(record(instruction)) is None


def test_a_mirror_is_not_mirrored_again() -> None:
    mirrored = mirrored_record(record("Move it to the left."))
    assert mirrored is not None and mirrored_record(mirrored) is None
