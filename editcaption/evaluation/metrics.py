"""Evaluation statistics: bootstrap confidence intervals, judge self-consistency, position swaps and
judge-vs-human agreement.

Inputs are plain sequences of scores or labels; unlabelled items (None) are counted and left out, never
filled in. The rater-agreement measures and verdict rates that the review stage shares live in
`editcaption.agreement`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from editcaption.agreement import cohen_kappa
from editcaption.schema import VERDICTS

_MAX_DRAWS = 2_000_000  # bootstrap indices held in memory at once


def bootstrap_ci(
    values: Iterable[float], n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high): the sample mean and its percentile-bootstrap confidence interval.

    Seeded, so a report recomputed from the same rows shows the same interval. Resamples are drawn in
    chunks, so memory stays bounded on large benchmarks.
    """
    data = np.asarray(list(values), dtype=float)
    if data.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not np.all(np.isfinite(data)):
        raise ValueError("bootstrap_ci got a NaN or infinite value")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, _MAX_DRAWS // data.size)
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        means[start:stop] = data[rng.integers(0, data.size, size=(stop - start, data.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(data.mean()), float(low), float(high)


def seed_pair_bootstrap(
    numerator: np.ndarray,
    denominator: np.ndarray | None = None,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(estimate, low, high) of a rate measured over training seeds × evaluation pairs.

    `numerator` is (seeds, pairs): e.g. 1 where a seed's model made an orientation error on a pair, or
    a per-pair difference between two models of the same seed. The estimate is sum(numerator) /
    sum(denominator) (the mean when `denominator` is None; a (pairs,) or (seeds, pairs) count
    otherwise, e.g. variants of a type per pair). Each resample draws seeds and pairs with replacement,
    the same pairs for every drawn seed, so the interval carries both the training-seed spread and the
    finite evaluation set; pairs stay matched across models of a seed, as a paired difference needs.
    """
    num = np.asarray(numerator, dtype=float)
    if num.ndim != 2 or 0 in num.shape:
        raise ValueError(f"seed_pair_bootstrap needs a (seeds, pairs) array, got shape {num.shape}")
    den = (
        np.ones_like(num)
        if denominator is None
        else np.broadcast_to(np.asarray(denominator, float), num.shape)
    )
    if not np.all(np.isfinite(num)) or not np.all(np.isfinite(den)):
        raise ValueError("seed_pair_bootstrap got a NaN or infinite value")
    if den.sum() <= 0:
        raise ValueError("seed_pair_bootstrap: the denominator sums to 0")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    n_seeds, n_pairs = num.shape
    estimates = np.empty(n_resamples)
    for i in range(n_resamples):
        seeds = rng.integers(0, n_seeds, n_seeds)
        pairs = rng.integers(0, n_pairs, n_pairs)
        d = den[np.ix_(seeds, pairs)].sum()
        estimates[i] = num[np.ix_(seeds, pairs)].sum() / d if d > 0 else np.nan
    estimates = estimates[np.isfinite(estimates)]
    tail = (1 - confidence) / 2
    low, high = np.quantile(estimates, [tail, 1 - tail])
    return float(num.sum() / den.sum()), float(low), float(high)


def mean_ci(values: Sequence[float]) -> dict[str, Any]:
    """`{"n", "mean", "ci_low", "ci_high"}` of `bootstrap_ci`, with None values when there is no data."""
    if not values:
        return {"n": 0, "mean": None, "ci_low": None, "ci_high": None}
    mean, low, high = bootstrap_ci(values)
    return {"n": len(values), "mean": mean, "ci_low": low, "ci_high": high}


def judge_self_consistency(scores_per_pass: Iterable[Sequence[float | None]]) -> dict[str, Any]:
    """How much a judge's score for one item moves between repeated passes (`num_pass`).

    Each entry holds one item's scores, one per pass; unparsed passes (None) are dropped, and items
    with fewer than two parsed passes are skipped. `mean_abs_deviation` is the mean over items of the
    scores' mean distance to their item mean (0 = perfectly stable); `exact_agreement` is the share of
    items whose passes all gave the same score. For verdicts, use `agreement.percent_agreement` on the passes.
    """
    deviations, agreeing, skipped = [], 0, 0
    for passes in scores_per_pass:
        parsed = np.asarray([s for s in passes if s is not None], dtype=float)
        if parsed.size < 2:
            skipped += 1
            continue
        deviations.append(float(np.abs(parsed - parsed.mean()).mean()))
        agreeing += bool(np.all(parsed == parsed[0]))
    items = len(deviations)
    return {
        "items": items,
        "skipped": skipped,
        "mean_abs_deviation": float(np.mean(deviations)) if items else None,
        "exact_agreement": agreeing / items if items else None,
    }


_SWAPPED = {"A": "B", "B": "A", "tie": "tie"}


def position_swap_agreement(
    ab_results: Sequence[str | None], ba_results: Sequence[str | None]
) -> dict[str, Any]:
    """Share of A-vs-B comparisons whose preference survives showing the two instructions swapped.

    `ab_results[i]` is the preference ("A", "B", "tie" or None when unparsed) with the first
    instruction shown as A; `ba_results[i]` the same comparison with it shown as B. Consistent means
    the same instruction wins both times, or both are ties. Among the inconsistent ones,
    `first_position` / `second_position` count the judge picking whatever was shown first / second
    both times (position bias), and `half_tie` a tie on one side only.
    """
    if len(ab_results) != len(ba_results):
        raise ValueError(f"{len(ab_results)} A-B results but {len(ba_results)} B-A results")
    counts = {"consistent": 0, "first_position": 0, "second_position": 0, "half_tie": 0}
    skipped = 0
    for ab, ba in zip(ab_results, ba_results, strict=True):
        if ab is None or ba is None:
            skipped += 1
            continue
        if ab not in _SWAPPED or ba not in _SWAPPED:
            raise ValueError(f"preferences must be 'A', 'B', 'tie' or None, got {ab!r} and {ba!r}")
        if _SWAPPED[ab] == ba:
            counts["consistent"] += 1
        elif "tie" in (ab, ba):
            counts["half_tie"] += 1
        else:
            counts["first_position" if ab == "A" else "second_position"] += 1
    pairs = len(ab_results) - skipped
    return {
        "pairs": pairs,
        "skipped": skipped,
        **counts,
        "agreement": counts["consistent"] / pairs if pairs else None,
    }


def judge_human_agreement(
    judge_verdicts: Sequence[str | None], human_verdicts: Sequence[str | None]
) -> dict[str, Any]:
    """How often the judge's verdict matches the human one on the same items, raw and chance-corrected.

    Items where either verdict is missing are skipped and counted. `confusion[judge][human]` counts
    the paired verdicts, so what the judge misses (e.g. critical errors it calls correct) is visible.
    """
    if len(judge_verdicts) != len(human_verdicts):
        raise ValueError(f"{len(judge_verdicts)} judge verdicts but {len(human_verdicts)} human ones")
    pairs = [(j, h) for j, h in zip(judge_verdicts, human_verdicts, strict=True) if None not in (j, h)]
    unknown = {v for pair in pairs for v in pair} - set(VERDICTS)
    if unknown:
        raise ValueError(f"unknown verdicts {sorted(unknown)}; expected one of {VERDICTS}")
    confusion = {j: dict.fromkeys(VERDICTS, 0) for j in VERDICTS}
    for j, h in pairs:
        confusion[j][h] += 1
    judge, human = [j for j, _ in pairs], [h for _, h in pairs]
    return {
        "items": len(pairs),
        "skipped": len(judge_verdicts) - len(pairs),
        "agreement": sum(j == h for j, h in pairs) / len(pairs) if pairs else None,
        "kappa": cohen_kappa(judge, human) if pairs else None,
        "confusion": confusion,
    }
