"""Hard negatives: one labelled error per variant, nothing where a rule does not apply, valid rows."""

from __future__ import annotations

import pytest

from editcaption.checks.directions import direction_words
from editcaption.checks.hard_negatives import hard_negatives, mix_preferences
from editcaption.schema import PreferencePair


def negatives(instruction: str, seed: int = 0) -> dict[str, dict]:
    rows = hard_negatives("p1", b"src", b"tgt", instruction, seed=seed)
    for row in rows:
        PreferencePair.model_validate(row)
        assert row["origin"] == "hard_negative"
        assert row["chosen"] == instruction
        assert row["rejected"] != instruction
        assert (row["pair_id"], row["source"], row["target"]) == ("p1", b"src", b"tgt")
    by_rule = {row["annotators"][0].removeprefix("rule:"): row for row in rows}
    assert len(by_rule) == len(rows) == len({r["rejected"] for r in rows})
    return by_rule


def labels(row: dict) -> tuple[str, str]:
    return row["error_type"], row["severity"]


def test_directions_swapped_is_a_critical_orientation_error() -> None:
    row = negatives("Move the blue cup on the viewer's left to the viewer's right.")["directions_swapped"]
    assert row["rejected"] == "Move the blue cup on the viewer's right to the viewer's left."
    assert labels(row) == ("orientation", "critical")
    row = negatives("Rotate the fan clockwise.")["directions_swapped"]
    assert row["rejected"] == "Rotate the fan counter-clockwise."


@pytest.mark.parametrize(
    ("instruction", "dropped", "swapped"),
    [
        (
            "Move the man to the viewer's left.",
            "Move the man to the left.",
            "Move the man to the man's own left.",
        ),
        ("Move the cup to the viewer's left.", "Move the cup to the left.", "Move the cup to its own left."),
        (
            "Place a lamp to the woman's own right.",
            "Place a lamp to the right.",
            "Place a lamp to the viewer's right.",
        ),
        (
            "Place a lamp to her own right.",
            "Place a lamp to the right.",
            "Place a lamp to the viewer's right.",
        ),
        (
            "Turn the dog to the right, as seen by the viewer.",
            "Turn the dog to the right.",
            "Turn the dog to the right from the dog's own point of view.",
        ),
        (
            "The viewer's left side gets a vase.",
            "The left side gets a vase.",
            "Its own left side gets a vase.",
        ),
    ],
)
def test_frame_dropped_and_swapped_are_major_viewpoint_errors(
    instruction: str, dropped: str, swapped: str
) -> None:
    rows = negatives(instruction)
    assert rows["frame_dropped"]["rejected"] == dropped
    assert rows["frame_swapped"]["rejected"] == swapped
    assert labels(rows["frame_dropped"]) == labels(rows["frame_swapped"]) == ("viewpoint", "major")
    # Orientation is untouched by a viewpoint variant: the same sides, in the same order.
    assert direction_words(dropped) == direction_words(swapped) == direction_words(instruction)


def test_attribute_removed_is_minor_and_replaced_is_major() -> None:
    text = "Replace the two red apples with three wooden pears."
    rows = negatives(text)
    removed = rows["attribute_removed"]
    assert labels(removed) == ("attribute", "minor")
    assert removed["rejected"] in {
        "Replace the two apples with three wooden pears.",
        "Replace the two red apples with three pears.",
    }
    colour = rows["colour_replaced"]["rejected"]
    assert labels(rows["colour_replaced"]) == ("attribute", "major")
    assert colour.startswith("Replace the two ") and " red " not in colour
    assert colour.split()[3] in {
        "orange",
        "yellow",
        "green",
        "blue",
        "purple",
        "pink",
        "brown",
        "black",
        "white",
    }
    material = rows["material_replaced"]["rejected"]
    assert labels(rows["material_replaced"]) == ("attribute", "major") and "wooden" not in material
    count = rows["count_replaced"]["rejected"]
    assert labels(rows["count_replaced"]) == ("attribute", "major")
    changed = [(a, b) for a, b in zip(count.split(), text.split(), strict=True) if a != b]
    assert len(changed) == 1 and changed[0][1] in {"two", "three"}
    assert changed[0][0] in {"two", "three", "four", "five", "six"}


def test_numbers_are_replaced_in_their_own_notation() -> None:
    for seed in range(10):
        rejected = negatives("Rotate the cup 90 degrees clockwise.", seed)["count_replaced"]["rejected"]
        assert rejected in {
            "Rotate the cup 180 degrees clockwise.",
            "Rotate the cup 45 degrees clockwise.",
            "Rotate the cup 130 degrees clockwise.",
        }
        rejected = negatives("Make it 1.5 times as wide.", seed)["count_replaced"]["rejected"]
        assert rejected in {
            "Make it 3.0 times as wide.",
            "Make it 0.8 times as wide.",
            "Make it 2.1 times as wide.",
        }


@pytest.mark.parametrize(
    ("instruction", "absent"),
    [
        ("Make the cup taller.", {"directions_swapped", "frame_dropped", "frame_swapped", "colour_replaced"}),
        (
            "Move the cup to the left.",
            {"frame_dropped", "frame_swapped", "colour_replaced", "count_replaced"},
        ),
        ("Leave the rest left unchanged.", {"directions_swapped"}),
        ("Raise the man's left hand.", {"frame_dropped", "frame_swapped"}),  # a hand's side is its owner's
        ("Add one of the cats.", {"count_replaced", "attribute_removed"}),
        ("Change the colour of the cup from red to navy.", {"attribute_removed"}),
        ("Paint the steel mug navy.", {"colour_replaced", "material_replaced"}),  # only near synonyms exist
    ],
)
def test_rules_that_do_not_apply_write_nothing(instruction: str, absent: set[str]) -> None:
    assert not absent & set(negatives(instruction))


def test_nothing_to_change_gives_no_rows() -> None:
    assert hard_negatives("p", b"s", b"t", "Remove the cup.") == []


def test_same_seed_same_rows_and_seeds_vary_the_choice() -> None:
    text = "Add a small red square and a large blue circle on the viewer's left; make it 25% wider."
    first = hard_negatives("p", b"s", b"t", text, seed=1)
    assert first == hard_negatives("p", b"s", b"t", text, seed=1)
    outcomes = {tuple(r["rejected"] for r in hard_negatives("p", b"s", b"t", text, seed=s)) for s in range(8)}
    assert len(outcomes) > 1


def test_mix_preferences_keeps_every_human_pair_at_the_ratio() -> None:
    human = [{"id": f"h{i}"} for i in range(10)]
    negs = [{"id": f"n{i}"} for i in range(50)]
    mixed = mix_preferences(human, negs, ratio=2.0, seed=0)
    assert len(mixed) == 30
    assert {r["id"] for r in human} <= {r["id"] for r in mixed}
    assert sum(r["id"].startswith("n") for r in mixed) == 20
    assert mixed == mix_preferences(human, negs, ratio=2.0, seed=0)
    assert mixed != mix_preferences(human, negs, ratio=2.0, seed=1)
    assert len(mix_preferences(human, negs[:5], ratio=2.0, seed=0)) == 15  # all there are
    assert (
        mix_preferences(human, negs, ratio=0.0, seed=0) != [] and len(mix_preferences(human, negs, 0.0)) == 10
    )
    with pytest.raises(ValueError):
        mix_preferences(human, negs, ratio=-1.0)
