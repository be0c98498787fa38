"""Attribute mentions and coverage against reference instructions and structured change lists."""

from __future__ import annotations

import pytest

from editcaption.checks.attributes import AttributeCoverage, attribute_coverage, attribute_mentions

MENTIONS: list[tuple[str, dict[str, set[str]]]] = [
    ("Make the ball grey.", {"colour": {"gray"}}),
    (
        "Paint the reddish door navy and the gate golden.",
        {"colour": {"red", "navy", "gold"}, "material": {"gold"}},
    ),
    ("Replace the wooden table with a marble one.", {"material": {"wood", "marble"}}),
    ("Add two cats and a pair of dogs.", {"count": {"2"}}),
    ("Add 3 birds; rotate the sign 90 degrees and move it 20 px.", {"count": {"3"}}),
    ("Change one of the cups; the one on the left stays.", {"position": {"left"}}),
    ("Make the dog bigger and the tree half as tall.", {"size": {"larger", "shorter"}}),
    ("Scale up the logo.", {"size": {"larger"}}),
    ("Make the square about 1.6 times as wide.", {"size": {"wider"}}),
    ("Remove the star and fill in the background where it was.", {}),
    ("Change the sign to read OPEN NOW.", {"text": {"open now"}}),
    ("Replace the caption with 'Happy Birthday!'.", {"text": {"happy birthday"}}),
    ('Write "Sale" on the banner.', {"text": {"sale"}}),
    ('Give the dog a "vintage" look.', {}),
    ("Make the man sit with his arms crossed, smiling.", {"pose": {"sitting", "arms crossed", "smiling"}}),
    (
        "She raises her right hand and faces the camera.",
        {"pose": {"hand raised", "facing the camera"}, "position": {"right"}},
    ),
    ("Put the cat on top of the box, next to the lamp.", {"position": {"above", "beside"}}),
    ("Move the star to the top of the image, in the background.", {"position": {"top", "background"}}),
    ("The background is left unchanged, right now.", {}),
    ("Move it a little left.", {"position": {"left"}}),
]


@pytest.mark.parametrize(("text", "expected"), MENTIONS)
def test_mentions(text: str, expected: dict[str, set[str]]) -> None:
    assert attribute_mentions(text) == expected


def test_wrong_value_of_the_same_kind() -> None:
    coverage = attribute_coverage("Make the ball green.", "Make the ball blue.")
    assert coverage == AttributeCoverage(
        missing={"colour": {"blue"}}, wrong={"colour": {"green"}}, covered={}, score=0.0
    )


def test_missing_without_a_substitute_is_only_missing() -> None:
    coverage = attribute_coverage("Turn the mug.", "Turn the wooden mug to the left.")
    assert coverage.missing == {"material": {"wood"}, "position": {"left"}}
    assert coverage.wrong == {} and coverage.score == 0.0


def test_opposite_side_is_wrong_but_another_axis_is_not() -> None:
    flipped = attribute_coverage("Move the cup to the right.", "Move the cup to the left.")
    assert flipped.wrong == {"position": {"right"}}
    other_axis = attribute_coverage("Move the cup to the top.", "Move the cup to the left.")
    assert other_axis.wrong == {} and other_axis.missing == {"position": {"left"}}


def test_size_groups_decide_what_contradicts() -> None:
    assert attribute_coverage("Make it smaller.", "Make it bigger.").wrong == {"size": {"smaller"}}
    assert attribute_coverage("Make it taller.", "Make it bigger.").wrong == {}


def test_full_and_partial_coverage_scores() -> None:
    reference = "Add two red wooden chairs on the left."
    assert attribute_coverage("Put 2 wooden chairs, red ones, on the left side.", reference).score == 1.0
    partial = attribute_coverage("Add two blue chairs on the left.", reference)
    assert partial.covered == {"count": {"2"}, "position": {"left"}}
    assert partial.missing == {"colour": {"red"}, "material": {"wood"}}
    assert partial.wrong == {"colour": {"blue"}}
    assert partial.score == pytest.approx(2 / 5)


def test_structured_reference() -> None:
    changes = [
        {"attribute": "color", "value": "Red"},
        {"attribute": "position", "value": "left"},
        {"attribute": "quantity", "value": 2},
        {"attribute": "text", "value": "OPEN"},
    ]
    coverage = attribute_coverage("Add a red sign reading 'open' on the right.", changes)
    assert coverage.covered == {"colour": {"red"}, "text": {"open"}}
    assert coverage.missing == {"position": {"left"}, "count": {"2"}}
    assert coverage.wrong == {"position": {"right"}}
    assert coverage.score == pytest.approx(2 / 5)


def test_structured_values_are_canonicalised() -> None:
    changes = [{"attribute": "colour", "value": "grey"}, {"attribute": "size", "value": "bigger"}]
    assert attribute_coverage("Make the cat gray and larger.", changes).score == 1.0


def test_empty_reference_scores_full() -> None:
    assert attribute_coverage("Make it blue.", "Remove the cat.").score == 1.0
    assert attribute_coverage("Make it blue.", []).score == 1.0


def test_bad_structured_reference() -> None:
    with pytest.raises(ValueError, match="unknown attribute"):
        attribute_coverage("x", [{"attribute": "smell", "value": "sweet"}])
    with pytest.raises(ValueError, match="needs 'attribute' and 'value'"):
        attribute_coverage("x", [{"kind": "colour"}])
