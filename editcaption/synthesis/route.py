"""Which scored pairs humans review first: the ones where a reviewer is most likely to change the outcome.

Review time is the scarce resource, so pairs are ranked by value, not sampled at random. Three
signals raise a pair's priority:

- its best EditScore is close to the keep/filter threshold, so the automatic decision is a coin toss;
- its candidates disagree: their scores are far apart, their wording has little in common, or one
  says "left" where another says "right" (an orientation error in at least one of them);
- its instructions use direction or camera words, where VLMs err most (orientation and viewpoint).

Pairs that could not be scored at all come first: nothing automatic vouches for them.
"""

from __future__ import annotations

import itertools
import math
import re

from pydantic import BaseModel, Field

# Opposite directions: one candidate using only one side and another only the other is a conflict.
OPPOSITE_DIRECTIONS: tuple[tuple[frozenset[str], frozenset[str]], ...] = (
    (frozenset({"left", "leftward", "leftwards"}), frozenset({"right", "rightward", "rightwards"})),
    (
        frozenset({"clockwise"}),
        frozenset({"counterclockwise", "counter-clockwise", "anticlockwise", "anti-clockwise"}),
    ),
    (frozenset({"up", "upward", "upwards"}), frozenset({"down", "downward", "downwards"})),
)
DIRECTION_WORDS: frozenset[str] = frozenset().union(*(a | b for a, b in OPPOSITE_DIRECTIONS))
CAMERA_WORDS: frozenset[str] = frozenset(
    [
        "camera",
        "pan",
        "pans",
        "panned",
        "panning",
        "zoom",
        "zooms",
        "zoomed",
        "zooming",
        "tilt",
        "tilts",
        "tilted",
        "tilting",
        "viewpoint",
        "perspective",
        "dolly",
    ]
)
CAMERA_PHRASES: tuple[str, ...] = (
    "rotate the view",
    "rotates the view",
    "rotated the view",
    "point of view",
    "field of view",
    "angle of view",
    "viewing angle",
)
# Word-set distance (1 - Jaccard) up to which two candidates read as rewordings of one edit, not two edits.
PARAPHRASE_DISTANCE = 0.4
# Disagreement (0-1) from which `candidates_disagree` is named as a reason.
DISAGREEMENT_REASON_MIN = 0.5
_TOKEN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


class RoutingConfig(BaseModel, extra="forbid"):
    """How many pairs go to human review and how the signals that choose them are weighed."""

    review_share: float = Field(
        0.1, ge=0.0, le=1.0, description="Share of scored pairs sent to review (rounded up to a whole pair)."
    )
    near_threshold_band: float = Field(
        1.0,
        gt=0.0,
        description="A best overall score within this distance of the threshold counts as near it (0-10 scale).",
    )
    near_threshold_weight: float = Field(
        1.0,
        ge=0.0,
        description="Priority added for a best score exactly at the threshold, falling linearly to 0 at "
        "the band's edge: these are the keep/filter decisions a reviewer is most likely to overturn.",
    )
    disagreement_weight: float = Field(
        1.0,
        ge=0.0,
        description="Priority added for full disagreement between candidates (opposite directions, "
        "scores `score_spread_scale` apart, or no word in common); partial disagreement adds a share.",
    )
    wording_weight: float = Field(
        0.5,
        ge=0.0,
        description="Priority added when any candidate uses direction or camera words, the phrasing "
        "behind most orientation and viewpoint errors.",
    )
    score_spread_scale: float = Field(
        2.0,
        gt=0.0,
        description="Spread between the highest and lowest candidate score counted as full disagreement.",
    )


def review_priority(
    best_overall: float | None,
    threshold: float,
    candidate_overalls: list[float | None],
    instructions: list[str | None],
    cfg: RoutingConfig,
) -> tuple[float, list[str]]:
    """(priority, reasons) of one pair: higher priority is reviewed first; reasons say why it ranks high.

    Unscored pairs rank above every scored pair (their priority starts above the largest a scored
    pair can reach); among them the other signals still order them.
    """
    reasons: list[str] = []
    words = [w for w in (_words(t) for t in instructions if t) if w]
    token_sets = [frozenset(w) for w in words]

    disagreement = max(_score_spread(candidate_overalls, cfg), wording_disagreement(instructions))
    if disagreement >= DISAGREEMENT_REASON_MIN:
        reasons.append("candidates_disagree")

    direction = any(tokens & DIRECTION_WORDS for tokens in token_sets)
    camera = any(tokens & CAMERA_WORDS for tokens in token_sets) or any(
        f" {phrase} " in f" {' '.join(w)} " for w in words for phrase in CAMERA_PHRASES
    )
    reasons += [name for name, hit in (("direction_words", direction), ("camera_words", camera)) if hit]

    priority = cfg.disagreement_weight * disagreement + cfg.wording_weight * float(direction or camera)
    if best_overall is None:
        ceiling = cfg.near_threshold_weight + cfg.disagreement_weight + cfg.wording_weight
        return 1.0 + ceiling + priority, ["unscored", *reasons]
    distance = abs(best_overall - threshold)
    if distance <= cfg.near_threshold_band:
        reasons.insert(0, "near_threshold")
        priority += cfg.near_threshold_weight * (1.0 - distance / cfg.near_threshold_band)
    return priority, reasons


def select_for_review(priorities: list[tuple[str, float]], share: float) -> set[str]:
    """The ⌈share·n⌉ highest-priority pair_ids; equal priorities go by pair_id, so reruns pick the same."""
    # Rounded first: 0.1 * 30 is 3.0000000000000004 in floating point, which must not become 4.
    count = math.ceil(round(share * len(priorities), 9))
    ranked = sorted(priorities, key=lambda item: (-item[1], item[0]))
    return {pair_id for pair_id, _ in ranked[:count]}


def wording_disagreement(instructions: list[str | None]) -> float:
    """How much the candidates' texts disagree, 0-1: 1 when one says a direction another reverses
    (left/right, clockwise/anticlockwise, up/down), else their mean word-set distance with paraphrases
    at 0. The filter reads it too (`FilterConfig.max_candidate_disagreement`): candidates that contradict
    each other say the annotator could not tell, whatever the scorer prefers."""
    token_sets = [frozenset(w) for w in (_words(t) for t in instructions if t) if w]
    return 1.0 if _directions_conflict(token_sets) else _wording_distance(token_sets)


def _words(text: str) -> list[str]:
    """Lower-case word tokens, hyphenated words kept whole ("counter-clockwise")."""
    return _TOKEN.findall(text.lower())


def _score_spread(overalls: list[float | None], cfg: RoutingConfig) -> float:
    scored = [s for s in overalls if s is not None]
    if len(scored) < 2:
        return 0.0
    return min(1.0, (max(scored) - min(scored)) / cfg.score_spread_scale)


def _wording_distance(token_sets: list[frozenset[str]]) -> float:
    """Mean pairwise 1 - Jaccard of the candidates' word sets, rescaled so paraphrases count 0, no shared word 1."""
    pairs = list(itertools.combinations(token_sets, 2))
    if not pairs:
        return 0.0
    distance = sum(1.0 - len(a & b) / len(a | b) for a, b in pairs) / len(pairs)
    return max(0.0, distance - PARAPHRASE_DISTANCE) / (1.0 - PARAPHRASE_DISTANCE)


def _directions_conflict(token_sets: list[frozenset[str]]) -> bool:
    """True when one candidate uses only one side of an axis (e.g. left) and another only the other."""
    for side_a, side_b in OPPOSITE_DIRECTIONS:
        only_a = any(t & side_a and not t & side_b for t in token_sets)
        only_b = any(t & side_b and not t & side_a for t in token_sets)
        if only_a and only_b:
            return True
    return False
