"""Exact grading of instructions against the world's ground truth.

A prediction is exact when it is the canonical instruction; otherwise it takes the error type and
severity of the labelled wrong variant it equals, or of an orientation flip when swapping its
directions gives the canonical text, and is `other` when it matches nothing (a garbled sentence).
Flip consistency compares a model's instructions for a pair and for its mirror image.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from editcaption.checks.directions import swap_directions
from editcaption.checks.flip import flip_consistency_rate, flip_verdict
from editcaption.demo.world import WorldPair
from editcaption.schema import ERROR_TYPES

# The ground-truth verdict as a 1-5 judge score: exact 5, then by the error's severity.
VERDICT_SCORE = {"exact": 5.0, "minor": 3.0, "major": 2.0, "critical": 1.0}


@dataclass(frozen=True)
class Grade:
    exact: bool
    error_type: str | None  # one of ERROR_TYPES, None when exact
    severity: str | None
    variant_kind: str | None  # which labelled variant it equals, if any

    @property
    def score(self) -> float:
        return VERDICT_SCORE["exact" if self.exact else self.severity or "critical"]


def _norm(text: str | None) -> str:
    return " ".join((text or "").split())


def grade(prediction: str | None, pair: WorldPair) -> Grade:
    text = _norm(prediction)
    if text == pair.instruction:
        return Grade(True, None, None, None)
    for v in pair.variants:
        if text == v.text:
            return Grade(False, v.error_type, v.severity, v.kind)
    if text and swap_directions(text) == pair.instruction:
        return Grade(False, "orientation", "critical", "direction_flipped")
    return Grade(False, "other", "critical", None)


def summarize(predictions: list[str | None], pairs: list[WorldPair]) -> dict:
    """Exact-match accuracy, per-error-type rates (share of all pairs), mean ground-truth judge score,
    and the same per edit kind."""
    if len(predictions) != len(pairs):
        raise ValueError(f"{len(predictions)} predictions for {len(pairs)} pairs")
    grades = [grade(p, pair) for p, pair in zip(predictions, pairs, strict=True)]
    n = max(1, len(grades))
    types = Counter(g.error_type for g in grades if not g.exact)
    by_kind: dict[str, list[Grade]] = {}
    for g, pair in zip(grades, pairs, strict=True):
        by_kind.setdefault(pair.kind, []).append(g)
    return {
        "n": len(grades),
        "exact_match": sum(g.exact for g in grades) / n,
        "error_rates": {t: types[t] / n for t in ERROR_TYPES},
        "judge_score": sum(g.score for g in grades) / n,
        "exact_by_kind": {k: sum(g.exact for g in gs) / len(gs) for k, gs in sorted(by_kind.items())},
    }


def flip_consistency(originals: list[str | None], mirrored: list[str | None]) -> dict:
    """The project's flip check over (pair, mirrored pair) instructions of one model."""
    verdicts = [flip_verdict(o, m)[0] for o, m in zip(originals, mirrored, strict=True)]
    return flip_consistency_rate(verdicts)
