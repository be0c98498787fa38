"""Review routing ranks pairs by how likely a reviewer is to change the outcome, and picks deterministically."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from editcaption.synthesis.route import RoutingConfig, review_priority, select_for_review

CFG = RoutingConfig()
THRESHOLD = 5.0
PLAIN = ["Change the cup's colour from red to blue.", "Change the colour of the cup from red to blue."]


def priority(best: float | None, overalls: list[float | None], instructions: list[str | None]) -> float:
    return review_priority(best, THRESHOLD, overalls, instructions, CFG)[0]


def reasons(best: float | None, overalls: list[float | None], instructions: list[str | None]) -> list[str]:
    return review_priority(best, THRESHOLD, overalls, instructions, CFG)[1]


def test_near_threshold_outranks_far() -> None:
    near, far = priority(5.2, [5.2, 5.0], PLAIN), priority(9.0, [9.0, 8.8], PLAIN)
    assert near > far
    assert priority(5.0, [5.0], PLAIN[:1]) > priority(5.6, [5.6], PLAIN[:1])
    assert reasons(5.2, [5.2, 5.0], PLAIN) == ["near_threshold"]
    assert reasons(9.0, [9.0, 8.8], PLAIN) == []


def test_left_right_conflict_outranks_agreement() -> None:
    conflict = ["Move the red cup to the viewer's left.", "Move the red cup to the viewer's right."]
    agree = ["Move the red cup to the viewer's left.", "Shift the red cup to the viewer's left."]
    assert priority(8.0, [8.0, 8.0], conflict) > priority(8.0, [8.0, 8.0], agree)
    assert reasons(8.0, [8.0, 8.0], conflict) == ["candidates_disagree", "direction_words"]
    assert reasons(8.0, [8.0, 8.0], agree) == ["direction_words"]
    # Both sides within one candidate ("from left to right") is a movement, not a conflict.
    both = ["Move the ball from left to right.", "Move the ball from the left to the right side."]
    assert "candidates_disagree" not in reasons(8.0, [8.0, 8.0], both)
    rotations = ["Rotate the knob clockwise.", "Rotate the knob counter-clockwise."]
    assert "candidates_disagree" in reasons(8.0, [8.0, 8.0], rotations)


def test_score_spread_and_different_wording_count_as_disagreement() -> None:
    assert priority(8.0, [8.0, 4.0], PLAIN) > priority(8.0, [8.0, 7.8], PLAIN)
    assert "candidates_disagree" in reasons(8.0, [8.0, 4.0], PLAIN)
    different = ["Remove the dog from the sofa.", "Change the sky to a sunset."]
    assert "candidates_disagree" in reasons(8.0, [8.0, 8.0], different)
    assert priority(8.0, [8.0, 8.0], different) > priority(8.0, [8.0, 8.0], PLAIN)


def test_camera_words_flagged() -> None:
    assert "camera_words" in reasons(8.0, [8.0], ["Zoom in on the lighthouse."])
    assert "camera_words" in reasons(8.0, [8.0], ["Rotate the view slightly."])
    assert "camera_words" in reasons(8.0, [8.0], ["The CAMERA pans along the street."])
    assert "camera_words" not in reasons(8.0, [8.0], PLAIN)
    assert priority(8.0, [8.0], ["Zoom in on the lighthouse."]) > priority(8.0, [8.0], PLAIN[:1])


def test_unscored_first() -> None:
    unscored = priority(None, [None, None], PLAIN)
    worst_scored = priority(5.0, [5.0, 0.0], ["Turn the camera to the left.", "Move the car right."])
    assert unscored > worst_scored
    assert reasons(None, [None], [None]) == ["unscored"]
    assert priority(None, [None], ["Pan the camera left."]) > priority(None, [None], PLAIN[:1])


def test_unparsed_and_empty_instructions_do_not_break_scoring() -> None:
    assert priority(8.0, [8.0, None], [None, "!!!", ""]) == 0.0


def test_selection_is_sized_and_deterministic() -> None:
    items = [(f"p{i:02d}", float(i % 3)) for i in range(30)]
    picked = select_for_review(items, 0.1)
    assert len(picked) == 3  # 0.1 * 30 is 3.0000000000000004 in floating point
    assert picked == {"p02", "p05", "p08"}  # priority 2, lowest pair_ids first
    assert select_for_review(list(reversed(items)), 0.1) == picked
    assert len(select_for_review(items[:7], 0.1)) == 1
    assert len(select_for_review(items[:11], 0.25)) == 3
    assert select_for_review(items, 0.0) == set() and select_for_review([], 0.5) == set()
    assert len(select_for_review(items, 1.0)) == 30


def test_config_rejects_unknown_keys_and_bad_shares() -> None:
    with pytest.raises(ValidationError):
        RoutingConfig(review_fraction=0.2)
    with pytest.raises(ValidationError):
        RoutingConfig(review_share=1.5)
