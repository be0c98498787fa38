"""Evaluation statistics against known answers: textbook kappas, bootstrap coverage on known data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from editcaption.agreement import cohen_kappa, fleiss_kappa, human_eval_rates, percent_agreement, rating_table
from editcaption.evaluation.metrics import (
    bootstrap_ci,
    judge_human_agreement,
    judge_self_consistency,
    position_swap_agreement,
)

# A 1-5 judge-score distribution with a known mean.
GRADES = np.arange(1, 6)
PROBABILITIES = np.array([0.10, 0.15, 0.20, 0.30, 0.25])
TRUE_MEAN = float(GRADES @ PROBABILITIES)  # 3.45


def _draw(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(GRADES, size=n, p=PROBABILITIES)


def test_bootstrap_ci_brackets_the_mean_and_is_seeded() -> None:
    values = _draw(np.random.default_rng(1), 200)
    mean, low, high = bootstrap_ci(values)
    assert mean == pytest.approx(values.mean())
    # The percentile interval of a mean is close to the normal one, mean ± 1.96 σ/√n: a wrong tail,
    # a resample of the wrong size or an off-centre interval misses it by far more than 8 %.
    half = 1.96 * values.std() / math.sqrt(values.size)
    assert (high - low) / 2 == pytest.approx(half, rel=0.08)
    assert (low + high) / 2 == pytest.approx(mean, abs=0.1 * half)
    assert bootstrap_ci(values, seed=0) == (mean, low, high)
    assert bootstrap_ci(list(values), seed=7) != (mean, low, high)


def test_bootstrap_ci_narrows_with_n() -> None:
    rng = np.random.default_rng(2)
    widths = {
        n: (lambda ci: ci[2] - ci[1])(bootstrap_ci(_draw(rng, n), n_resamples=1000)) for n in (100, 1000)
    }
    assert 2.5 < widths[100] / widths[1000] < 4.5  # about sqrt(10)


def test_bootstrap_ci_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(3)
    experiments = 200
    hits = 0
    for seed in range(experiments):
        _, low, high = bootstrap_ci(_draw(rng, 1000), n_resamples=400, seed=seed)
        hits += low <= TRUE_MEAN <= high
    assert 0.90 <= hits / experiments <= 0.99


def test_bootstrap_ci_confidence_level_and_degenerate_data() -> None:
    values = _draw(np.random.default_rng(4), 300)
    _, low90, high90 = bootstrap_ci(values, confidence=0.90)
    _, low99, high99 = bootstrap_ci(values, confidence=0.99)
    assert low99 < low90 < high90 < high99
    assert bootstrap_ci([4.0, 4.0, 4.0]) == (4.0, 4.0, 4.0)
    assert bootstrap_ci([2.0]) == (2.0, 2.0, 2.0)


@pytest.mark.parametrize(
    "values, kwargs",
    [([], {}), ([1.0, math.nan], {}), ([1.0, 2.0], {"confidence": 1.0}), ([1.0], {"n_resamples": 0})],
)
def test_bootstrap_ci_rejects_bad_input(values: list[float], kwargs: dict) -> None:
    with pytest.raises(ValueError):
        bootstrap_ci(values, **kwargs)


def _raters(yes_yes: int, yes_no: int, no_yes: int, no_no: int) -> tuple[list[str], list[str]]:
    """Two raters' labels from a 2x2 agreement table (rows: rater A, columns: rater B)."""
    a = ["yes"] * (yes_yes + yes_no) + ["no"] * (no_yes + no_no)
    b = ["yes"] * yes_yes + ["no"] * yes_no + ["yes"] * no_yes + ["no"] * no_no
    return a, b


def test_cohen_kappa_textbook_examples() -> None:
    # 50 items: p_o = 0.7, p_e = 0.5*0.6 + 0.5*0.4 = 0.5, kappa = 0.4.
    a, b = _raters(20, 5, 10, 15)
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(b, a) == pytest.approx(0.4)
    assert percent_agreement(zip(a, b, strict=True)) == pytest.approx(0.7)
    # 100 items: p_o = 0.6, p_e = 0.6*0.7 + 0.4*0.3 = 0.54, kappa = 0.06 / 0.46.
    assert cohen_kappa(*_raters(45, 15, 25, 15)) == pytest.approx(0.06 / 0.46)


def test_cohen_kappa_edges() -> None:
    assert cohen_kappa(["a", "b", "c"], ["a", "b", "c"]) == pytest.approx(1.0)
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None  # chance agreement is already 1
    for a, b in ((["a"], ["a", "b"]), ([], []), (["a", None], ["a", "b"])):
        with pytest.raises(ValueError):
            cohen_kappa(a, b)


# Fleiss (1971) as commonly worked: 10 subjects, 14 raters, 5 categories; kappa = 0.210.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_textbook_example() -> None:
    assert fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.2099, abs=1e-4)
    items = [[j for j, k in enumerate(row) for _ in range(k)] for row in FLEISS_TABLE]
    table, labels = rating_table(items)
    assert fleiss_kappa(table) == pytest.approx(0.2099, abs=1e-4)
    assert sorted(labels) == [0, 1, 2, 3, 4]
    assert percent_agreement(items) == pytest.approx(0.378, abs=1e-3)


def test_fleiss_kappa_of_two_raters_is_scotts_pi() -> None:
    """Chance agreement comes from the pooled labels (55 yes, 45 no of 100), not from each rater's own
    (Cohen's, 0.4) nor from uniform categories (0.4 too): p_e = 0.55² + 0.45² = 0.505, so
    kappa = (0.7 - 0.505) / (1 - 0.505) = 13/33."""
    a, b = _raters(20, 5, 10, 15)
    table, _ = rating_table(zip(a, b, strict=True))
    assert percent_agreement(zip(a, b, strict=True)) == pytest.approx(0.7)
    assert fleiss_kappa(table) == pytest.approx(13 / 33)


def test_fleiss_kappa_edges() -> None:
    assert fleiss_kappa([[3, 0], [0, 3], [3, 0]]) == pytest.approx(1.0)
    assert fleiss_kappa([[3, 0], [3, 0]]) is None
    # Two raters per item: the same observed agreement as Cohen's setting.
    # Items rated by different numbers of people.
    assert fleiss_kappa(rating_table([["x", "x", "x"], ["y", "y"], ["x", "y"]])[0]) == pytest.approx(
        (np.mean([1, 1, 0]) - (4 / 7) ** 2 - (3 / 7) ** 2) / (1 - (4 / 7) ** 2 - (3 / 7) ** 2)
    )
    for bad in ([[1, 0], [2, 0]], [], [[2, -1]]):
        with pytest.raises(ValueError):
            fleiss_kappa(bad)


def test_human_eval_rates() -> None:
    verdicts = ["correct"] * 6 + ["minor_error"] * 3 + ["critical_error"] + [None, None]
    rates = human_eval_rates(verdicts)
    assert rates["n"] == 10 and rates["missing"] == 2
    assert rates["counts"] == {"correct": 6, "minor_error": 3, "critical_error": 1}
    assert rates["percent"] == pytest.approx({"correct": 60.0, "minor_error": 30.0, "critical_error": 10.0})
    empty = human_eval_rates([None])
    assert empty["n"] == 0 and set(empty["percent"].values()) == {None}
    with pytest.raises(ValueError):
        human_eval_rates(["wrong"])


def test_judge_human_agreement() -> None:
    judge = ["correct", "correct", "critical_error", "minor_error", None, "correct"]
    human = ["correct", "critical_error", "critical_error", "minor_error", "correct", None]
    result = judge_human_agreement(judge, human)
    assert result["items"] == 4 and result["skipped"] == 2
    assert result["agreement"] == pytest.approx(0.75)
    assert result["kappa"] == pytest.approx(cohen_kappa(judge[:4], human[:4]))
    assert result["confusion"]["correct"]["critical_error"] == 1
    assert sum(sum(row.values()) for row in result["confusion"].values()) == 4
    none = judge_human_agreement([None], ["correct"])
    assert none["items"] == 0 and none["agreement"] is None and none["kappa"] is None
    with pytest.raises(ValueError):
        judge_human_agreement(["correct"], [])


def test_position_swap_agreement() -> None:
    ab = ["A", "B", "tie", "A", "B", "A", "tie", None]
    ba = ["B", "A", "tie", "A", "B", "tie", "A", "B"]
    result = position_swap_agreement(ab, ba)
    assert result == {
        "pairs": 7,
        "skipped": 1,
        "consistent": 3,
        "first_position": 1,
        "second_position": 1,
        "half_tie": 2,
        "agreement": pytest.approx(3 / 7),
    }
    assert position_swap_agreement([None], ["A"])["agreement"] is None
    with pytest.raises(ValueError):
        position_swap_agreement(["A"], ["yes"])
    with pytest.raises(ValueError):
        position_swap_agreement(["A"], [])


def test_judge_self_consistency() -> None:
    result = judge_self_consistency([[4, 4, 4], [3, 5, None], [2, None], [1, 2, 3]])
    assert result["items"] == 3 and result["skipped"] == 1
    assert result["exact_agreement"] == pytest.approx(1 / 3)
    assert result["mean_abs_deviation"] == pytest.approx((0 + 1 + 2 / 3) / 3)
    assert judge_self_consistency([[5]])["mean_abs_deviation"] is None
    assert percent_agreement([["correct", "correct", "minor_error"]]) == pytest.approx(1 / 3)


def test_seed_pair_bootstrap_carries_the_seed_spread_and_the_pair_count():
    from editcaption.evaluation.metrics import seed_pair_bootstrap

    rng = np.random.default_rng(0)
    pairs = (rng.random(300) < 0.3).astype(float)
    same = np.tile(pairs, (5, 1))  # five seeds that agree on every pair
    spread = np.stack(
        [np.roll(pairs, 0)] + [(rng.random(300) < p).astype(float) for p in (0.1, 0.2, 0.4, 0.5)]
    )
    est, low, high = seed_pair_bootstrap(same)
    assert est == pytest.approx(pairs.mean()) and low < est < high
    est2, low2, high2 = seed_pair_bootstrap(spread)
    assert est2 == pytest.approx(spread.mean())
    assert (high2 - low2) > 1.5 * (high - low)  # seeds that disagree widen the interval
    # A ratio: variants preferred per pair over variants per pair.
    est3, low3, high3 = seed_pair_bootstrap(same, np.full(300, 2.0))
    assert est3 == pytest.approx(pairs.mean() / 2) and low3 < est3 < high3
    # A paired difference that is always positive has an interval above zero.
    est4, low4, _ = seed_pair_bootstrap(np.abs(spread - same) + 0.01)
    assert low4 > 0
    with pytest.raises(ValueError, match="seeds, pairs"):
        seed_pair_bootstrap(pairs)
    with pytest.raises(ValueError, match="NaN"):
        seed_pair_bootstrap(np.full((2, 3), np.nan))
