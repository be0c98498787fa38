"""Flip consistency: the mirror itself, when it applies, the verdict, and the engine stage without Ray."""

from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from editcaption.checks.directions import find_directions, swap_directions
from editcaption.checks.flip import (
    FlipConsistencyCheck,
    flip_applicable,
    flip_consistency_rate,
    flip_expand,
    flip_merge,
    flip_verdict,
    mirror_pair,
)
from editcaption.engines.base import Engine, EngineRequest, EngineResult, SamplingSettings
from editcaption.images import ImagePolicy, decode_image
from editcaption.prompts.instruction import instruction_messages
from editcaption.schema import Candidate


def png(img: Image.Image, **save: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **save)
    return buf.getvalue()


def marked(width: int = 5, height: int = 3) -> Image.Image:
    """Black image with one red pixel in the top-left corner."""
    img = Image.new("RGB", (width, height))
    img.putpixel((0, 0), (255, 0, 0))
    return img


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# ---------------------------------------------------------------- mirror_pair


def test_mirror_pair_moves_a_known_pixel_to_the_other_side() -> None:
    source, target = png(marked()), png(Image.new("RGB", (5, 3), (0, 0, 255)))
    mirrored_source, mirrored_target = mirror_pair(source, target)
    out = pixels(mirrored_source)
    assert out.shape == (3, 5, 3)
    assert tuple(out[0, 4]) == (255, 0, 0) and tuple(out[0, 0]) == (0, 0, 0)
    assert np.array_equal(out, pixels(source)[:, ::-1])
    assert Image.open(io.BytesIO(mirrored_target)).format == "PNG"


def test_mirror_pair_applies_exif_orientation_first() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90° clockwise: portrait
    rotated = png(marked(), exif=exif.tobytes())
    mirrored, _ = mirror_pair(rotated, rotated)
    upright = np.asarray(decode_image(rotated, ImagePolicy(min_side=1)))
    assert upright.shape == (5, 3, 3)  # the red pixel is shown in the top-right corner
    assert tuple(upright[0, 2]) == (255, 0, 0)
    assert np.array_equal(pixels(mirrored), upright[:, ::-1])
    assert tuple(pixels(mirrored)[0, 0]) == (255, 0, 0)


# ---------------------------------------------------------------- applicability


@pytest.mark.parametrize(
    ("instruction", "reference", "applicable", "because"),
    [
        ("Move the cup to the viewer's left.", None, True, "left"),
        ("Rotate the fan blades clockwise.", None, True, "clockwise"),
        ("Make the cup taller.", None, False, "no horizontal direction"),
        ("Move the star up by 20%.", None, False, "no horizontal direction"),
        ("Leave the rest left unchanged and make it red.", None, False, "no horizontal direction"),
        ("Make the cup taller.", "Move the cup to the viewer's left.", True, "left"),
        ("Change the sign on the left to read OPEN.", None, False, "sign"),
        ("Add the word SALE to the banner on the viewer's right.", None, False, "word"),
        ("Put a logo on the right side of the shirt.", None, False, "logo"),
        ("Turn the clock hands to the right.", None, False, "clock"),
        ("Move the cup to the left.", "Replace the text on the mug with 'HI'.", False, "text"),
        ("Add a caption in the bottom-left corner.", None, False, "caption"),
        (None, None, False, "no instruction"),
        ("", None, False, "no instruction"),
    ],
)
def test_flip_applicable(
    instruction: str | None, reference: str | None, applicable: bool, because: str
) -> None:
    ok, reason = flip_applicable(instruction, reference)
    assert ok is applicable
    assert because in reason


# ---------------------------------------------------------------- verdict


@pytest.mark.parametrize(
    ("original", "mirrored", "verdict"),
    [
        ("Move the cup to the viewer's left.", "Move the cup to the viewer's right.", "consistent"),
        ("Move the cup to the viewer's left.", "Move the cup to the viewer's left.", "inconsistent"),
        ("Move the cup to the viewer's left.", "Slide the mug to the viewer’s RIGHT side.", "consistent"),
        (
            "Move the cup to the viewer's left.",
            "Move the cup to the right.",
            "consistent",
        ),  # frame: not orientation
        ("Move the cup to the leftmost spot.", "Move the cup to the right.", "consistent"),
        ("Turn the wheel clockwise.", "Turn the wheel anticlockwise.", "consistent"),
        ("Turn the wheel clockwise.", "Turn the wheel clockwise.", "inconsistent"),
        (
            "Move the ball on the viewer's left to the viewer's right.",
            "Move the ball on the viewer's right to the viewer's left.",
            "consistent",
        ),
        (
            "Move the ball on the viewer's left to the viewer's right.",
            "Move the ball on the viewer's left to the viewer's right.",
            "inconsistent",
        ),
        (
            "Move the ball on the viewer's left to the viewer's right.",
            "Move the ball to the viewer's left.",
            "inconsistent",
        ),
        ("Move the cup to the left.", "Move the cup.", "inconsistent"),
        ("Make the cup red.", "Make the cup red; the rest is left unchanged.", "not_applicable"),
        ("Make the cup red.", "Move the cup to the right.", "inconsistent"),
        ("Change the sign on the left to OPEN.", "Change the sign on the right to NEPO.", "not_applicable"),
        (None, "Move the cup to the right.", "not_applicable"),
        ("Move the cup to the right.", None, "not_applicable"),
    ],
)
def test_flip_verdict(original: str | None, mirrored: str | None, verdict: str) -> None:
    got, reason = flip_verdict(original, mirrored)
    assert got == verdict, reason
    assert reason


def test_flip_consistency_rate() -> None:
    rate = flip_consistency_rate(["consistent"] * 3 + ["inconsistent", "not_applicable", "not_applicable"])
    assert rate == {"consistent": 3, "inconsistent": 1, "not_applicable": 2, "applicable": 4, "rate": 0.75}
    assert flip_consistency_rate(["not_applicable"])["rate"] is None
    with pytest.raises(ValueError):
        flip_consistency_rate(["maybe"])


# ---------------------------------------------------------------- recall / false alarms on the sample


def _digest(images: list[bytes]) -> str:
    policy = ImagePolicy(reject_identical=False)
    return hashlib.sha256(b"".join(decode_image(i, policy).tobytes() for i in images)).hexdigest()


def _inject(text: str, rng: random.Random) -> str:
    """One direction of the text flipped: the error a guessing captioner makes."""
    m = rng.choice([m for m in find_directions(text) if m.directional])
    return text[: m.start] + swap_directions(m.text) + text[m.end :]


def _reword(text: str) -> str:
    """Different wording, same directions: what a truthful captioner's second answer looks like."""
    for old, new in [
        ("viewer's", "viewer’s"),
        ("about", "roughly"),
        ("everything else stays the same", "nothing else changes"),
        ("leave everything else unchanged", "keep the rest as it is"),
        ("Move", "Shift"),
    ]:
        text = text.replace(old, new)
    return "Instruction: " + text


class ScriptedCaptioner:
    """Stands in for a VLM (none can run here), answering by the pixels it is shown.

    It knows every sample pair and its mirror by their decoded pixels: on a sample pair it gives the
    reference instruction, with one direction flipped on the pairs chosen for an injected error; on a
    mirrored pair it truthfully gives the swapped reference, reworded. A pair it does not know (a
    mirror that did not flip) fails the test.
    """

    def __init__(self, pairs: list[dict], injected: set[str]):
        self.answers: dict[str, str] = {}
        rng = random.Random(1)
        for pair in pairs:
            original = pair["reference"]
            if pair["pair_id"] in injected:
                original = _inject(original, rng)
            self.answers[_digest([pair["source"], pair["target"]])] = original
            flipped = [_flip(pair["source"]), _flip(pair["target"])]
            self.answers[_digest(flipped)] = _reword(swap_directions(pair["reference"]))

    def answer(self, request: EngineRequest) -> EngineResult:
        return EngineResult(request_id=request.request_id, text=self.answers[_digest(request.images)])


def _flip(data: bytes) -> bytes:
    """The mirror made independently of mirror_pair, with numpy."""
    return png(Image.fromarray(np.asarray(decode_image(data, ImagePolicy()))[:, ::-1].copy()))


@pytest.fixture(scope="module")
def sample(sample_pairs_dir: Path) -> list[dict]:
    return [
        {
            "pair_id": d.name,
            "source": (d / "source.png").read_bytes(),
            "target": (d / "target.png").read_bytes(),
            "reference": json.loads((d / "meta.json").read_text())["instruction"],
            "quarantine_reason": None,
        }
        for d in sorted(sample_pairs_dir.iterdir())
        if (d / "meta.json").exists()
    ]


def test_flip_check_catches_injected_errors_on_the_sample(sample: list[dict]) -> None:
    """Recall of injected left/right errors >= 0.9 and false alarms <= 0.1, over five random splits."""
    caught = injected_total = alarms = clean_total = 0
    for seed in range(5):
        rng = random.Random(seed)
        candidates = [p for p in sample if flip_applicable(p["reference"])[0]]
        injected = {p["pair_id"] for p in candidates if rng.random() < 0.5}
        captioner = ScriptedCaptioner(sample, injected)
        for pair in sample:
            row = {**pair, "instruction": captioner.answers[_digest([pair["source"], pair["target"]])]}
            requests = flip_expand(row)
            out = flip_merge(row, [captioner.answer(r) for r in requests])
            if pair not in candidates:
                assert out["flip_verdict"] == "not_applicable" and not requests
            elif pair["pair_id"] in injected:
                injected_total += 1
                caught += out["flip_verdict"] == "inconsistent"
            else:
                clean_total += 1
                alarms += out["flip_verdict"] == "inconsistent"
    assert injected_total >= 20 and clean_total >= 20
    assert caught / injected_total >= 0.9
    assert alarms / clean_total <= 0.1


# ---------------------------------------------------------------- expand / merge


def _candidates(*texts: str | None) -> list[dict]:
    return [
        Candidate(
            pair_id="p",
            candidate_id=f"p:{i}",
            instruction=t,
            raw_text=t or "",
            model="annotator",
            prompt_version="v",
            parsed=t is not None,
        ).to_row()
        for i, t in enumerate(texts)
    ]


@pytest.fixture
def pair_row() -> dict:
    return {"pair_id": "p", "source": png(marked()), "target": png(marked(5, 3)), "quarantine_reason": None}


def test_expand_merge_round_trip_on_candidates(pair_row: dict) -> None:
    row = {
        **pair_row,
        "candidates": _candidates("Move the cup to the left.", None, "Make it red.", "Turn it clockwise."),
    }
    sampling = SamplingSettings(temperature=0.7, seed=10)
    requests = flip_expand(row, sampling)
    assert [r.request_id for r in requests] == ["p:0:mirror", "p:3:mirror"]
    assert [r.sampling.seed for r in requests] == [10, 13]  # each candidate's own seed
    assert requests[0].messages == instruction_messages()
    assert np.array_equal(pixels(requests[0].images[0]), pixels(row["source"])[:, ::-1])
    results = [
        EngineResult(request_id="p:0:mirror", text="Move the cup to the right."),
        EngineResult(request_id="p:3:mirror", text="Turn it clockwise."),
    ]
    out = flip_merge(row, results)
    assert out["flip_verdict"] == "inconsistent"
    assert out["flip_reason"].startswith("p:3: ")
    details = json.loads(out["flip_details"])
    assert [d["verdict"] for d in details] == ["consistent", "not_applicable", "inconsistent"]
    assert details[0]["mirrored"] == "Move the cup to the right."
    assert out["candidates"] == row["candidates"]


def test_expand_merge_checks_only_the_best_candidate_once_chosen(pair_row: dict) -> None:
    row = {
        **pair_row,
        "candidates": _candidates("Move the cup to the left.", "Move the cup to the right."),
        "best_candidate_id": "p:1",
    }
    (request,) = flip_expand(row)
    assert request.request_id == "p:1:mirror"
    out = flip_merge(row, [EngineResult(request_id=request.request_id, text="Move the cup to the left.")])
    assert out["flip_verdict"] == "consistent"


def test_expand_merge_on_an_instruction_column(pair_row: dict) -> None:
    row = {**pair_row, "instruction": "Move the cup to the viewer's left."}
    (request,) = flip_expand(row)
    out = flip_merge(row, [EngineResult(request_id=request.request_id, text=None, error="timeout")])
    assert out["flip_verdict"] == "not_applicable"
    assert "engine error" in out["flip_reason"]


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        ({"quarantine_reason": "too_small"}, "quarantined"),
        ({"candidates": _candidates(None)}, "no parsed instruction"),
        ({"instruction": "Make the cup red."}, "no horizontal direction words"),
        ({"instruction": "Move the cup left.", "source": b"not an image"}, "could not be mirrored"),
    ],
)
def test_rows_without_a_check(pair_row: dict, update: dict, reason: str) -> None:
    row = {**pair_row, **update}
    assert flip_expand(row) == []
    out = flip_merge(row, [])
    assert out["flip_verdict"] == "not_applicable"
    assert reason in out["flip_reason"]


class ListEngine(Engine):
    """An engine over plain lists of rows, to check the stage's wiring without Ray."""

    def __init__(self, answer):
        self.answer = answer

    def apply(self, ds):
        raise AssertionError("the flip check must go through apply_grouped")

    def predictor(self):
        raise AssertionError("the flip check must go through apply_grouped")

    def apply_grouped(self, ds, expand, merge, batch_size=8, replicas=1):
        return [merge(row, [self.answer(r) for r in expand(row)]) for row in ds]


def test_flip_consistency_check_runs_through_the_engine(pair_row: dict) -> None:
    seeds = []

    def answer(request: EngineRequest) -> EngineResult:
        seeds.append(request.sampling.seed)
        return EngineResult(request_id=request.request_id, text="Move the cup to the viewer's right.")

    check = FlipConsistencyCheck(ListEngine(answer), sampling=SamplingSettings(seed=3))
    rows = check.apply([{**pair_row, "instruction": "Move the cup to the viewer's left."}])
    assert rows[0]["flip_verdict"] == "consistent"
    assert seeds == [3]
    assert flip_consistency_rate(r["flip_verdict"] for r in rows)["rate"] == 1.0
