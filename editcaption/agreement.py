"""Agreement between raters and the human-evaluation rates, shared by the review stage (annotator
agreement in `review stats`) and the evaluation stage (human metrics in the eval report).

Inputs are plain sequences of labels; unlabelled items (None) are refused or counted, never filled in.
Agreements and kappas are proportions in 0-1, and a kappa whose chance agreement is already perfect
(every label the same) is undefined and returned as None rather than NaN, so results stay valid JSON.
Verdict rates are percentages, as the paper reports them.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np

from editcaption.schema import VERDICTS


def human_eval_rates(verdicts: Iterable[str | None]) -> dict[str, Any]:
    """Counts and percentages of correct / minor_error / critical_error verdicts: the paper's numbers.

    Percentages are over the labelled verdicts (`n`); unlabelled ones (None) are counted in `missing`.
    Percentages are None when nothing is labelled.
    """
    counts = dict.fromkeys(VERDICTS, 0)
    missing = 0
    for verdict in verdicts:
        if verdict is None:
            missing += 1
        elif verdict in counts:
            counts[verdict] += 1
        else:
            raise ValueError(f"unknown verdict {verdict!r}; expected one of {VERDICTS}")
    n = sum(counts.values())
    percent = {v: 100 * c / n if n else None for v, c in counts.items()}
    return {"n": n, "missing": missing, "counts": counts, "percent": percent}


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa between two raters' labels on the same items: agreement beyond chance."""
    if len(a) != len(b):
        raise ValueError(f"raters labelled {len(a)} and {len(b)} items")
    if not a:
        raise ValueError("cohen_kappa needs at least one item")
    if any(x is None for x in (*a, *b)):
        raise ValueError("drop unlabelled (None) items before computing kappa")
    labels = {label: i for i, label in enumerate(dict.fromkeys([*a, *b]))}
    joint = np.zeros((len(labels), len(labels)))
    np.add.at(joint, ([labels[x] for x in a], [labels[y] for y in b]), 1)
    joint /= len(a)
    observed = float(np.trace(joint))
    chance = float(joint.sum(axis=1) @ joint.sum(axis=0))
    return _kappa(observed, chance)


def rating_table(items: Iterable[Sequence[Hashable]]) -> tuple[np.ndarray, list[Hashable]]:
    """(items x labels count table, labels in first-seen order) from each item's list of labels."""
    items = [list(labels) for labels in items]
    if any(label is None for labels in items for label in labels):
        raise ValueError("drop unlabelled (None) ratings before building the table")
    labels = list(dict.fromkeys(label for ratings in items for label in ratings))
    index = {label: j for j, label in enumerate(labels)}
    table = np.zeros((len(items), len(labels)), dtype=int)
    for i, ratings in enumerate(items):
        for label in ratings:
            table[i, index[label]] += 1
    return table, labels


def fleiss_kappa(table: Sequence[Sequence[float]] | np.ndarray) -> float | None:
    """Fleiss' kappa from an items x categories table of how many raters chose each category.

    With the same number of raters per item this is Fleiss' kappa exactly. Items rated by different
    numbers of people (common in a review queue) use each item's own count in its agreement, the usual
    extension; every item needs at least two ratings.
    """
    counts = _counts(table)
    chance = float(np.sum((counts.sum(axis=0) / counts.sum()) ** 2))
    return _kappa(_item_agreement(counts), chance)


def percent_agreement(items: Iterable[Sequence[Hashable]]) -> float:
    """Observed agreement (0-1): the share of agreeing rater pairs per item, averaged over items.

    Each item is the list of labels it got. For two raters this is the share of items they labelled
    the same; for more, it is the agreement term of Fleiss' kappa.
    """
    table, _ = rating_table(items)
    return _item_agreement(_counts(table))


def _counts(table: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    counts = np.asarray(table, dtype=float)
    if counts.ndim != 2 or counts.shape[0] == 0:
        raise ValueError("expected a non-empty items x categories table")
    if np.any(counts < 0):
        raise ValueError("rating counts cannot be negative")
    if np.any(counts.sum(axis=1) < 2):
        raise ValueError("every item needs at least two ratings for agreement")
    return counts


def _item_agreement(counts: np.ndarray) -> float:
    """Mean over items of the share of rater pairs that agree."""
    per_item = counts.sum(axis=1)
    return float(np.mean((counts * (counts - 1)).sum(axis=1) / (per_item * (per_item - 1))))


def _kappa(observed: float, chance: float) -> float | None:
    if np.isclose(chance, 1.0):
        return None
    return (observed - chance) / (1 - chance)
