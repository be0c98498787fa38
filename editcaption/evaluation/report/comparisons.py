"""Report section on pairwise comparisons: wins, ties and position-swap agreement per model pair."""

from __future__ import annotations

from editcaption.evaluation.report.tables import Block, num, table


def comparison_table(cells: list[dict]) -> list[Block]:
    """Pairwise A-vs-B results; only wins both orders agree on count, so order bias shows as 'order-dependent'."""
    if not cells:
        return []
    rows = [
        [
            c["judge"],
            f"{c['model_a']} vs {c['model_b']}",
            c["benchmark"],
            str(c["comparisons"]),
            str(c["a_wins"]),
            str(c["b_wins"]),
            str(c["ties"]),
            str(c["inconsistent"]),
            str(c["unparsed"]),
            num(c["a_win_rate"]),
            num(c["position_swap"]["agreement"]),
        ]
        for c in cells
    ]
    header = [
        "judge",
        "A vs B",
        "benchmark",
        "pairs",
        "A wins",
        "B wins",
        "ties",
        "order-dependent",
        "unparsed",
        "A win rate",
        "position-swap agreement",
    ]
    return [
        ("h2", "Pairwise comparisons"),
        (
            "p",
            "Each comparison is asked twice, A and B swapped; a win counts only when both orders agree. "
            "The win rate is over decided comparisons (wins and ties).",
        ),
        table(header, rows),
    ]
