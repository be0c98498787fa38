"""Report sections on verdicts: the rates of each verdict and how often each error type is named."""

from __future__ import annotations

from editcaption.evaluation.report.tables import VERDICT_LABELS, Block, published_label, rate, table
from editcaption.schema import ERROR_TYPES, VERDICTS


def verdict_table(judged: list[dict], human: list[dict], published: list[dict]) -> list[Block]:
    """Verdict rates per judge (and human) cell, published rates below for comparison."""
    rows = [
        [
            c["judge"],
            c["model"],
            c["benchmark"],
            str(c["verdicts"]["n"]),
            *(rate(c["verdicts"], v) for v in VERDICTS),
        ]
        for c in [*judged, *human]
    ]
    for row in published:
        if any(row.get(v) is not None for v in VERDICTS):
            rates = [f"{row[v]:.1f}%" if row.get(v) is not None else "—" for v in VERDICTS]
            rows.append(["published", published_label(row), row.get("benchmark", ""), "", *rates])
    header = ["judged by", "model", "benchmark", "labelled", *(VERDICT_LABELS[v] for v in VERDICTS)]
    return [("h2", "Verdicts"), table(header, rows)]


def error_table(cells: list[dict]) -> list[Block]:
    """How often each error type is named, as a count and a share of labelled verdicts."""
    rows = []
    for c in cells:
        n = c["verdicts"]["n"]
        counts = [
            f"{c['error_types'][t]} ({100 * c['error_types'][t] / n:.1f}%)" if n else "—" for t in ERROR_TYPES
        ]
        rows.append([c["judge"], c["model"], c["benchmark"], str(n), *counts])
    return [
        ("h2", "Error types"),
        (
            "p",
            "How many labelled verdicts name each error type (share of labelled verdicts); one "
            "instruction can have several.",
        ),
        table(["judged by", "model", "benchmark", "labelled", *ERROR_TYPES], rows),
    ]
