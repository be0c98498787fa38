"""Grading against ground truth, error-injected labels and preference records from the world."""

from __future__ import annotations

import pytest

from editcaption.checks.directions import swap_directions
from editcaption.demo.grading import flip_consistency, grade, summarize
from editcaption.demo.records import NoiseConfig, preference_records, sft_records
from editcaption.demo.world import WorldConfig, generate, mirrored


@pytest.fixture(scope="module")
def pairs():
    return list(generate(300, WorldConfig(seed=5)))


def test_canonical_is_exact_and_variants_carry_their_label(pairs):
    for p in pairs:
        assert grade(p.instruction, p).exact
        assert grade("  " + p.instruction.replace(" ", "  ") + " ", p).exact
        for v in p.variants:
            g = grade(v.text, p)
            assert not g.exact and (g.error_type, g.severity) == (v.error_type, v.severity)
        assert grade("Paint the sky.", p).error_type == "other"
        assert grade(None, p).error_type == "other"


def test_summary_counts_errors_by_type(pairs):
    preds = [p.instruction for p in pairs]
    flipped = next(i for i, p in enumerate(pairs) if "viewer's left" in p.instruction)
    preds[flipped] = swap_directions(preds[flipped])
    preds[0] = "garbage"
    s = summarize(preds, pairs)
    assert s["exact_match"] == pytest.approx((len(pairs) - 2) / len(pairs))
    assert s["error_rates"]["orientation"] == pytest.approx(1 / len(pairs))
    assert s["error_rates"]["other"] == pytest.approx(1 / len(pairs))
    assert 1 <= s["judge_score"] < 5
    with pytest.raises(ValueError, match="predictions"):
        summarize(preds[:-1], pairs)


def test_flip_consistency_of_truth_and_of_a_side_blind_model(pairs):
    lr = [p for p in pairs if "viewer's" in p.instruction or " own " in p.instruction]
    truth = flip_consistency([p.instruction for p in lr], [mirrored(p).instruction for p in lr])
    assert truth["rate"] == 1.0 and truth["applicable"] == len(lr)
    # A model that always writes the same text for a pair and its mirror is inconsistent on every one.
    blind = flip_consistency([p.instruction for p in lr], [p.instruction for p in lr])
    assert blind["rate"] == 0.0


def test_injected_label_errors_follow_the_rules(pairs):
    noise = NoiseConfig(rules={"camera_pan/direction_flipped": 1.0, "recolour/colour_removed": 0.5}, seed=1)
    rows, rates = sft_records(pairs, noise)
    assert len(rows) == len(pairs)
    graded = [grade(r["instruction"], p) for r, p in zip(rows, pairs, strict=True)]
    for error_type, rate in rates.items():
        assert rate == pytest.approx(sum(g.error_type == error_type for g in graded) / len(pairs))
    for g, p in zip(graded, pairs, strict=True):
        if p.kind == "camera_pan":  # rate 1: every pan is told the wrong way round
            assert g.variant_kind == "direction_flipped"
        elif p.kind != "recolour":
            assert g.exact
    recolours = [g for g, p in zip(graded, pairs, strict=True) if p.kind == "recolour"]
    assert 0.25 < sum(g.variant_kind == "colour_removed" for g in recolours) / len(recolours) < 0.75
    defaults, default_rates = sft_records(pairs, NoiseConfig())
    assert all(0.05 < default_rates[t] < 0.35 for t in ("orientation", "viewpoint", "attribute"))
    clean, none = sft_records(pairs[:5])
    assert [r["instruction"] for r in clean] == [p.instruction for p in pairs[:5]]
    assert set(none.values()) == {0.0}


def test_preference_records_one_per_variant(pairs):
    rows = preference_records(pairs[:20])
    assert len(rows) == sum(len(p.variants) for p in pairs[:20])
    assert all(r["origin"] == "ground_truth" and r["chosen"] != r["rejected"] for r in rows)
