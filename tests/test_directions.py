"""The direction swap that flip consistency, mirrored augmentation and orientation negatives rely on."""

from __future__ import annotations

import pytest

from editcaption.checks.directions import (
    direction_words,
    find_directions,
    has_direction_words,
    load_lexicon,
    swap_directions,
)

# (instruction, the same instruction for the horizontally mirrored pair)
SWAPS: list[tuple[str, str]] = [
    # plain sides, capitalisation, punctuation next to the word
    ("Move the cup to the left.", "Move the cup to the right."),
    ("Move the cup to the right.", "Move the cup to the left."),
    ("Left: a red ball.", "Right: a red ball."),
    ("TURN LEFT NOW", "TURN RIGHT NOW"),
    ("The arrow points left.", "The arrow points right."),
    ("Shift the logo right, then up.", "Shift the logo left, then up."),
    ("A lamp (left) and a vase (right).", "A lamp (right) and a vase (left)."),
    ("Slide it left; stop at the edge.", "Slide it right; stop at the edge."),
    ('The sign says "left".', 'The sign says "right".'),
    ("left", "right"),
    ("Right", "Left"),
    ("Is the dog on the left?", "Is the dog on the right?"),
    ("Move the lamp left a bit.", "Move the lamp right a bit."),
    ("Move it right by 20 pixels.", "Move it left by 20 pixels."),
    ("Move the cup from left to right.", "Move the cup from right to left."),
    ("Flip it left to right.", "Flip it right to left."),
    ("Look left and right.", "Look right and left."),
    ("The cup is left of the plate.", "The cup is right of the plate."),
    ("Keep the left side unchanged.", "Keep the right side unchanged."),
    ("The woman on the far right waves.", "The woman on the far left waves."),
    ("Tilt the camera slightly right.", "Tilt the camera slightly left."),
    ("Turn right at the corner.", "Turn left at the corner."),
    ("Turn right now.", "Turn left now."),
    ("Add a tree on the right next to the house.", "Add a tree on the left next to the house."),
    # frame-of-reference phrases
    ("Move the box to the viewer's right.", "Move the box to the viewer's left."),
    ("Move the box to the viewer’s left.", "Move the box to the viewer’s right."),
    ("Raise the man's own right hand.", "Raise the man's own left hand."),
    ("Raise her left arm.", "Raise her right arm."),
    ("It sits camera left.", "It sits camera right."),
    ("Place it screen right, image left of the tree.", "Place it screen left, image right of the tree."),
    (
        "From the viewer's perspective, the dog faces left.",
        "From the viewer's perspective, the dog faces right.",
    ),
    # hyphenation and compounds
    ("Use the left-hand side.", "Use the right-hand side."),
    ("A Right-Hand drive car.", "A Left-Hand drive car."),
    ("He is left-handed.", "He is right-handed."),
    ("Put a star in the top-left corner.", "Put a star in the top-right corner."),
    ("The bottom-right part of the image.", "The bottom-left part of the image."),
    ("Upper left, lower right.", "Upper right, lower left."),
    ("Move it to the left-most slot.", "Move it to the right-most slot."),
    ("The leftmost cup turns red.", "The rightmost cup turns red."),
    ("Pan leftward, then rightwards.", "Pan rightward, then leftwards."),
    ("A LEFT-TO-RIGHT gradient.", "A RIGHT-TO-LEFT gradient."),
    # rotations and their spellings
    ("Rotate the bottle 45 degrees clockwise.", "Rotate the bottle 45 degrees counter-clockwise."),
    ("Rotate it counter-clockwise.", "Rotate it clockwise."),
    ("Rotate it counterclockwise.", "Rotate it clockwise."),
    ("Rotate it anticlockwise.", "Rotate it clockwise."),
    ("Rotate it anti-clockwise.", "Rotate it clockwise."),
    ("Rotate it counter clockwise.", "Rotate it clockwise."),
    ("Clockwise, then anticlockwise.", "Anticlockwise, then clockwise."),
    ("Turn the knob counterclockwise, not clockwise.", "Turn the knob clockwise, not counterclockwise."),
    ("Rotate 90° CW.", "Rotate 90° CCW."),
    ("Spin it Clockwise.", "Spin it Counter-clockwise."),
    # non-directional uses stay as they are
    ("The background is left unchanged.", "The background is left unchanged."),
    ("Everything else is left as is.", "Everything else is left as is."),
    ("Keep the left-over pizza.", "Keep the left-over pizza."),
    ("Throw away the leftovers.", "Throw away the leftovers."),
    ("The man left the room.", "The man left the room."),
    ("She left.", "She left."),
    ("What is left of the cake turns blue.", "What is left of the cake turns blue."),
    ("There are two apples left.", "There are two apples left."),
    ("Nothing is left on the plate.", "Nothing is left on the plate."),
    ("The dog was left behind.", "The dog was left behind."),
    ("Do it right now.", "Do it right now."),
    ("All right, make it brighter.", "All right, make it brighter."),
    ("Start right away.", "Start right away."),
    ("Pick the right answer.", "Pick the right answer."),
    ("Get the size right.", "Get the size right."),
    ("Place the vase right next to the lamp.", "Place the vase right next to the lamp."),
    ("Draw a right angle.", "Draw a right angle."),
    ("Keep the bottle right side up.", "Keep the bottle right side up."),
    ("Add a copyright notice; all rights reserved.", "Add a copyright notice; all rights reserved."),
    ("Stand the chair upright.", "Stand the chair upright."),
    ("Move the ball up and down.", "Move the ball up and down."),
    # both senses in one sentence
    ("The man's right hand is left unchanged.", "The man's left hand is left unchanged."),
    (
        "Move the mug on the left right next to the plate; the rest is left untouched.",
        "Move the mug on the right right next to the plate; the rest is left untouched.",
    ),
    (
        "Move the blue square to the viewer's left by about 25% of the image width; everything else stays the same.",
        "Move the blue square to the viewer's right by about 25% of the image width; everything else stays the same.",
    ),
]


@pytest.mark.parametrize(("text", "mirrored"), SWAPS)
def test_swap(text: str, mirrored: str) -> None:
    assert swap_directions(text) == mirrored


# A lone non-preferred spelling has nothing in the text to copy, so it comes back as the preferred one.
NORMALISED = {
    "Rotate it counterclockwise.",
    "Rotate it anticlockwise.",
    "Rotate it anti-clockwise.",
    "Rotate it counter clockwise.",
}


@pytest.mark.parametrize(
    ("text", "mirrored"), [case for case in SWAPS if case[0] != case[1] and case[0] not in NORMALISED]
)
def test_swapping_twice_gives_the_text_back(text: str, mirrored: str) -> None:
    assert swap_directions(mirrored) == text


@pytest.mark.parametrize("text", sorted(NORMALISED))
def test_lone_variant_spelling_comes_back_as_the_preferred_one(text: str) -> None:
    assert swap_directions(swap_directions(text)) == "Rotate it counter-clockwise."


def test_table_is_large_enough() -> None:
    assert len(SWAPS) >= 60


def test_direction_words_lists_only_directional_uses() -> None:
    text = "The man left the room; move the cup to the Left, then rotate it anti-clockwise and up."
    assert direction_words(text) == ["Left", "anti-clockwise"]
    assert has_direction_words(text)
    assert not has_direction_words("Make the sky blue, right now; the rest is left as is.")
    assert not has_direction_words("Move the ball up.")


def test_mentions_carry_spans_groups_and_senses() -> None:
    text = "Left unchanged: rotate clockwise."
    first, second = find_directions(text)
    assert (first.text, first.directional, first.kind) == ("Left", False, "sides")
    assert (second.text, second.directional, second.kind) == ("clockwise", True, "rotations")
    assert text[second.start : second.end] == "clockwise"


def test_lexicon_is_cached_and_languages_are_checked() -> None:
    assert load_lexicon("en") is load_lexicon()
    with pytest.raises(ValueError, match="available: en"):
        load_lexicon("xx")
    with pytest.raises(ValueError, match="no lexicon"):
        load_lexicon("../en")
