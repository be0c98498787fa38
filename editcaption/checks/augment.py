"""Mirrored augmentation for SFT: each direction-bearing record also teaches its mirror image.

A model trained on both a pair and its mirror, with left and right swapped in the instruction, cannot
learn a side bias ("most moves go left") and must read the side from the pixels. Records whose
content a mirror changes (visible text, clocks) or that state no horizontal direction are refused:
the first would teach wrong text, the second adds nothing orientation-specific.
"""

from __future__ import annotations

from typing import Any

from editcaption.checks.directions import swap_directions
from editcaption.checks.flip import flip_applicable, mirror_pair

MIRROR_SUFFIX = ":mirror"


def mirrored_record(record: dict[str, Any], lang: str = "en") -> dict[str, Any] | None:
    """The mirrored copy of an SFT record, or None when the record is refused.

    A record that is itself a mirror is refused too (its mirror is the original). `overall` is
    cleared: the score belonged to the original pair and was never measured on this one.
    """
    applicable, _ = flip_applicable(record.get("instruction"), lang=lang)
    if not applicable or record.get("origin") == "augmentation":
        return None
    source, target = mirror_pair(bytes(record["source"]), bytes(record["target"]))
    return {
        **record,
        "pair_id": record["pair_id"] + MIRROR_SUFFIX,
        "source": source,
        "target": target,
        "instruction": swap_directions(record["instruction"], lang),
        "origin": "augmentation",
        "overall": None,
    }
