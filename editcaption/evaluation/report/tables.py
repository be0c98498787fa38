"""The report's building blocks and cell formatting, shared by every section.

A report is a list of `Block`s — ("h1" | "h2" | "h3" | "p" | "alert" | "img", text) or
("table", (header, rows)) — that `render` turns into Markdown and HTML alike.
"""

from __future__ import annotations

import json
from typing import Any

Block = tuple[str, Any]
VERDICT_LABELS = {"correct": "correct", "minor_error": "minor error", "critical_error": "critical error"}


def table(header: list[str], rows: list[list[str]]) -> Block:
    """A table block: header and rows of cell text."""
    return ("table", (header, rows))


def plain(value: Any) -> str:
    """A metadata value as cell text: floats to 4 significant digits, others as JSON."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)


def num(value: float | None) -> str:
    """A number to 2 decimals, or a dash where there is none."""
    return "—" if value is None else f"{value:.2f}"


def ci(stats: dict[str, Any] | None) -> str:
    """A mean with its 95% CI and n, or a dash where nothing was measured."""
    if not stats or not stats.get("n"):
        return "—"
    return f"{stats['mean']:.2f} [{stats['ci_low']:.2f}, {stats['ci_high']:.2f}] (n={stats['n']})"


def rate(verdicts: dict[str, Any], verdict: str) -> str:
    """A verdict's percentage and count, or a dash where nothing was labelled."""
    percent = verdicts["percent"][verdict]
    return "—" if percent is None else f"{percent:.1f}% ({verdicts['counts'][verdict]})"


def published_label(row: dict[str, Any]) -> str:
    """A published reference row's name, marked as published so it is never taken for a run."""
    return f"{row['model']} (published{': ' + row['source'] if row.get('source') else ''})"
