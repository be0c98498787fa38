"""The report's PNG plots: score distributions, error types and per-category means, one panel per benchmark.

Each returns PNG bytes, or None when no cell has data for it (the report then leaves the plot out).
Figures are drawn with Agg directly, so no display and no pyplot global state are involved.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from editcaption.evaluation.metrics import mean_ci
from editcaption.evaluation.report.summary import BIN_CENTRES
from editcaption.schema import ERROR_TYPES


def score_plot(judged: list[dict]) -> bytes | None:
    """Per benchmark, each model's share of judge scores in each half-point bin."""
    panels = _panels(judged, lambda c: c["overall"]["n"] > 0)
    if panels is None:
        return None
    fig, axes = panels
    judges = {c["judge"] for c in judged}
    for ax, benchmark, cells in axes:
        series = [
            (_series(c, judges), [100 * k / c["overall"]["n"] for k in c["overall_histogram"].values()], None)
            for c in cells
        ]
        _grouped_bars(ax, [f"{b:g}" for b in BIN_CENTRES], series)
        ax.set(title=f"{benchmark}: judge scores", xlabel="overall score (1-5)", ylabel="% of scored")
    return _png(fig)


def error_plot(cells: list[dict]) -> bytes | None:
    """Per benchmark, how often each error type is named, as % of labelled verdicts; judge and human."""
    panels = _panels(cells, lambda c: c["verdicts"]["n"] > 0)
    if panels is None:
        return None
    fig, axes = panels
    judges = {c["judge"] for c in cells}
    for ax, benchmark, group in axes:
        series = [
            (_series(c, judges), [100 * c["error_types"][t] / c["verdicts"]["n"] for t in ERROR_TYPES], None)
            for c in group
        ]
        _grouped_bars(ax, list(ERROR_TYPES), series)
        ax.set(title=f"{benchmark}: error types", ylabel="% of labelled verdicts")
    return _png(fig)


def category_plot(judged: list[dict]) -> bytes | None:
    """Per benchmark with categories, each model's mean judge score per category, with its 95% CI."""
    panels = _panels(judged, lambda c: any(s["overall"]["n"] for s in c["categories"].values()))
    if panels is None:
        return None
    fig, axes = panels
    judges = {c["judge"] for c in judged}
    for ax, benchmark, cells in axes:
        labels = sorted({k for c in cells for k in c["categories"]})
        series = []
        for cell in cells:
            stats = [cell["categories"].get(k, {}).get("overall") or mean_ci([]) for k in labels]
            means = [s["mean"] if s["n"] else np.nan for s in stats]
            errors = [
                [s["mean"] - s["ci_low"] if s["n"] else 0 for s in stats],
                [s["ci_high"] - s["mean"] if s["n"] else 0 for s in stats],
            ]
            series.append((_series(cell, judges), means, errors))
        _grouped_bars(ax, labels, series)
        ax.set(title=f"{benchmark}: by category", ylabel="mean judge score (1-5)", ylim=(0, 5.4))
    return _png(fig)


def _series(cell: dict[str, Any], judges: set[str]) -> str:
    """A legend label: the model, plus who judged when that is not obvious."""
    return cell["model"] if judges == {cell["judge"]} else f"{cell['model']} · {cell['judge']}"


def _panels(
    cells: list[dict], keep: Callable[[dict], Any]
) -> tuple[Figure, list[tuple[Any, str, list[dict]]]] | None:
    """A figure with one axes per benchmark that has cells passing `keep`, or None when none does."""
    by_benchmark: dict[str, list[dict]] = defaultdict(list)
    for cell in cells:
        if keep(cell):
            by_benchmark[cell["benchmark"]].append(cell)
    if not by_benchmark:
        return None
    cols = min(3, len(by_benchmark))
    rows = math.ceil(len(by_benchmark) / cols)
    fig = Figure(figsize=(5.5 * cols, 3.8 * rows), layout="constrained")
    FigureCanvasAgg(fig)  # render with Agg: no display, no pyplot global state
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes[len(by_benchmark) :]:
        ax.set_visible(False)
    return fig, [(ax, b, by_benchmark[b]) for ax, b in zip(axes, sorted(by_benchmark), strict=False)]


def _grouped_bars(ax: Any, labels: list[str], series: list[tuple[str, list[float], list | None]]) -> None:
    """Side-by-side bars, one series per model, on one axes."""
    width = 0.8 / len(series)
    x = np.arange(len(labels))
    for i, (name, heights, errors) in enumerate(series):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, heights, width, yerr=errors, label=name, capsize=2)
    ax.set_xticks(x, labels, rotation=30 if max(len(s) for s in labels) > 10 else 0, ha="right")
    ax.legend(fontsize="small")


def _png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()
