"""The evaluation report: `metrics.json`, `report.md`, a self-contained `report.html` and PNG plots.

`summarise` turns `schema.Judgment`-shaped rows (VLM judges and `human:<annotator>` verdicts alike)
into the metrics dict; `write_eval_report` renders it. The dict is plain JSON, so a report can be
rebuilt from `metrics.json` alone. Its shape (every key optional; missing ones drop their sections):

    {
      "meta": {"judge_prompt_version": "judge-v1", ...},   # free-form, shown as given
      "judged": [                       # one cell per (VLM judge, captioner, benchmark)
        {"judge": "qwen3-vl-235b", "model": "ours-8b", "benchmark": "eval-400",
         "n": 400,                                        # judgment rows
         "parse_failures": {"verdict": 3, "overall": 3},  # rows without one; left out, never guessed
         "overall": {"n": 397, "mean": 3.91, "ci_low": 3.82, "ci_high": 4.0},  # 1-5, 95% bootstrap
         "overall_histogram": {"1": 10, "1.5": 0, ..., "5": 120},  # half-point bins
         "verdicts": {"n": 397, "missing": 3,              # as `metrics.human_eval_rates`
                      "counts": {"correct": 250, ...}, "percent": {"correct": 62.97, ...}},
         "error_types": {"orientation": 40, "viewpoint": 12, "attribute": 30, "other": 5},
         "dimensions": {"correctness": {"n": 397, "mean": 4.1, "ci_low": ..., "ci_high": ...}, ...},
         "categories": {"camera_zoom": {"n": 80, "overall": {...}, "verdicts": {...}}, ...}}
      ],
      "human": [                        # one cell per (captioner, benchmark); `judge` is "human"
        {..., "n": 800, "items": 400, "annotators": 3,    # annotations, distinct instructions, people
         "inter_annotator": {"items": 120, "agreement": 0.81, "fleiss_kappa": 0.64}}
      ],
      "judge_vs_human": [               # as `metrics.judge_human_agreement`, per judged cell
        {"judge": ..., "model": ..., "benchmark": ..., "items": 390, "skipped": 10,
         "agreement": 0.78, "kappa": 0.6, "confusion": {"correct": {"correct": 200, ...}, ...}}
      ],
      "consistency": {"self_consistency": {...}, "position_swap": {...}},  # from `metrics`, as given
      "judge_passes": [...], "comparisons": [...], "captions": [...],  # the eval job's cells (`summaries`)
      "quarantine": {"eval-400": {"empty_file": 1}},
      "published": [                    # reference rows, labelled as published in every table
        {"model": "paper-8b", "benchmark": "eval-400", "source": "paper, table 2",
         "mean": 4.2, "correct": 71.0, "minor_error": 18.5, "critical_error": 10.5}
      ]
    }

`dimensions` and `categories` are empty when the rows carry no `scores` / `category`. Human rates are
over annotations (each person's verdict counts once); items judged by several people feed
`inter_annotator`, and their majority verdict (ties skipped) is what the judge is compared with.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import posixpath
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from editcaption.evaluation.metrics import (
    fleiss_kappa,
    human_eval_rates,
    judge_human_agreement,
    mean_ci,
    percent_agreement,
    rating_table,
)
from editcaption.io.fs import open_fs
from editcaption.prompts.judge import DIMENSIONS
from editcaption.redaction import redact
from editcaption.schema import ERROR_TYPES, VERDICTS, Judgment

METRICS = "metrics.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
SCORES_PNG = "score_distributions.png"
ERRORS_PNG = "error_types.png"
CATEGORIES_PNG = "categories.png"
HUMAN = "human"
_BIN_CENTRES = [1 + i / 2 for i in range(9)]  # 1, 1.5, ..., 5
_BIN_EDGES = [c - 0.25 for c in _BIN_CENTRES] + [5.25]
_VERDICT_LABELS = {"correct": "correct", "minor_error": "minor error", "critical_error": "critical error"}

Block = tuple[str, Any]


def summarise(judgments: Iterable[dict[str, Any]], published: list[dict[str, Any]] | None = None) -> dict:
    """The metrics dict (module docstring) from judgment rows; `published` rows are passed through."""
    rows = [_validated(row) for row in judgments]
    judged: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    human: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        if row["judge"].startswith("human:"):
            human[(row["model"], row["benchmark"])].append(row)
        else:
            judged[(row["judge"], row["model"], row["benchmark"])].append(row)
    metrics: dict[str, Any] = {
        "judged": [_judged_cell(key, cell) for key, cell in sorted(judged.items())],
        "human": [_human_cell(key, cell) for key, cell in sorted(human.items())],
        "judge_vs_human": [
            {"judge": j, "model": m, "benchmark": b, **_versus(cell, human[(m, b)])}
            for (j, m, b), cell in sorted(judged.items())
            if (m, b) in human
        ],
    }
    if published:
        metrics["published"] = list(published)
    return metrics


def write_eval_report(metrics: dict[str, Any], out_dir: str) -> list[str]:
    """Write metrics.json, report.md, report.html and the plots there is data for; returns the names.
    The run's description (`meta`, from its config) is written with credentials masked."""
    if "meta" in metrics:
        metrics = {**metrics, "meta": redact(metrics["meta"])}
    fs, root = open_fs(out_dir)
    fs.makedirs(root, exist_ok=True)
    plots = {
        name: png
        for name, png in (
            (SCORES_PNG, _score_plot(metrics.get("judged") or [])),
            (ERRORS_PNG, _error_plot([*(metrics.get("judged") or []), *(metrics.get("human") or [])])),
            (CATEGORIES_PNG, _category_plot(metrics.get("judged") or [])),
        )
        if png is not None
    }
    blocks = _blocks(metrics, list(plots))
    files = {
        METRICS: json.dumps(metrics, indent=2, allow_nan=False).encode(),
        REPORT_MD: _markdown(blocks).encode(),
        REPORT_HTML: _html(blocks, plots).encode(),
        **plots,
    }
    for name, data in files.items():
        with fs.open(posixpath.join(root, name), "wb") as f:
            f.write(data)
    return list(files)


# --- summarising rows -------------------------------------------------------------------------------


def _validated(row: dict[str, Any]) -> dict[str, Any]:
    """The row's Judgment fields checked against the schema, plus `category` and numeric `scores`."""
    judgment = Judgment.model_validate({k: row[k] for k in Judgment.model_fields if k in row}).to_row()
    scores = row.get("scores") or {}
    if not isinstance(scores, dict) or any(
        v is not None and (isinstance(v, bool) or not isinstance(v, int | float)) for v in scores.values()
    ):
        raise ValueError(f"scores of pair {judgment['pair_id']} must map dimensions to numbers: {scores!r}")
    category = row.get("category")
    return {**judgment, "category": None if category is None else str(category), "scores": scores}


def _overall(rows: list[dict]) -> list[float]:
    return [r["overall"] for r in rows if r["overall"] is not None]


def _cell(rows: list[dict]) -> dict[str, Any]:
    """What judged and human cells share: scores, verdict rates, error types, breakdowns."""
    overall = _overall(rows)
    counts = np.histogram(overall, bins=_BIN_EDGES)[0] if overall else [0] * len(_BIN_CENTRES)
    names = [d for d in DIMENSIONS if any(d in r["scores"] for r in rows)]
    names += sorted({d for r in rows for d in r["scores"]} - set(names))
    by_category: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row["category"] is not None:
            by_category[row["category"]].append(row)
    return {
        "n": len(rows),
        "overall": mean_ci(overall),
        "overall_histogram": {f"{c:g}": int(k) for c, k in zip(_BIN_CENTRES, counts, strict=True)},
        "verdicts": human_eval_rates(r["verdict"] for r in rows),
        "error_types": {t: sum(t in r["error_types"] for r in rows) for t in ERROR_TYPES},
        "dimensions": {
            d: mean_ci([r["scores"][d] for r in rows if r["scores"].get(d) is not None]) for d in names
        },
        "categories": {
            c: {
                "n": len(cat),
                "overall": mean_ci(_overall(cat)),
                "verdicts": human_eval_rates(r["verdict"] for r in cat),
            }
            for c, cat in sorted(by_category.items())
        },
    }


def _judged_cell(key: tuple[str, str, str], rows: list[dict]) -> dict[str, Any]:
    judge, model, benchmark = key
    failures = {
        "verdict": sum(r["verdict"] is None for r in rows),
        "overall": sum(r["overall"] is None for r in rows),
    }
    return {"judge": judge, "model": model, "benchmark": benchmark, "parse_failures": failures, **_cell(rows)}


def _by_item(rows: list[dict]) -> dict[tuple[str, str], list[str]]:
    """Labelled verdicts per judged instruction: the same pair with another text is another item."""
    items: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in rows:
        verdicts = items[(row["pair_id"], row["instruction"])]
        if row["verdict"] is not None:
            verdicts.append(row["verdict"])
    return items


def _human_cell(key: tuple[str, str], rows: list[dict]) -> dict[str, Any]:
    model, benchmark = key
    items = _by_item(rows)
    shared = [verdicts for verdicts in items.values() if len(verdicts) >= 2]
    inter = {"items": len(shared), "agreement": None, "fleiss_kappa": None}
    if shared:
        inter.update(agreement=percent_agreement(shared), fleiss_kappa=fleiss_kappa(rating_table(shared)[0]))
    return {
        "judge": HUMAN,
        "model": model,
        "benchmark": benchmark,
        **_cell(rows),
        "items": len(items),
        "annotators": len({r["judge"] for r in rows}),
        "inter_annotator": inter,
    }


def _majority(verdicts: list[str]) -> str | None:
    """The most frequent verdict, or None when there is none or two verdicts tie for it."""
    ranked = Counter(verdicts).most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def _versus(judged: list[dict], human: list[dict]) -> dict[str, Any]:
    judge_items, human_items = _by_item(judged), _by_item(human)
    keys = sorted(judge_items.keys() & human_items.keys())
    return judge_human_agreement(
        [_majority(judge_items[k]) for k in keys], [_majority(human_items[k]) for k in keys]
    )


# --- plots ------------------------------------------------------------------------------------------


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
    width = 0.8 / len(series)
    x = np.arange(len(labels))
    for i, (name, heights, errors) in enumerate(series):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, heights, width, yerr=errors, label=name, capsize=2)
    ax.set_xticks(x, labels, rotation=30 if max(len(s) for s in labels) > 10 else 0, ha="right")
    ax.legend(fontsize="small")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _score_plot(judged: list[dict]) -> bytes | None:
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
        _grouped_bars(ax, [f"{b:g}" for b in _BIN_CENTRES], series)
        ax.set(title=f"{benchmark}: judge scores", xlabel="overall score (1-5)", ylabel="% of scored")
    return _png(fig)


def _error_plot(cells: list[dict]) -> bytes | None:
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


def _category_plot(judged: list[dict]) -> bytes | None:
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


# --- report text ------------------------------------------------------------------------------------


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _ci(stats: dict[str, Any] | None) -> str:
    if not stats or not stats.get("n"):
        return "—"
    return f"{stats['mean']:.2f} [{stats['ci_low']:.2f}, {stats['ci_high']:.2f}] (n={stats['n']})"


def _rate(verdicts: dict[str, Any], verdict: str) -> str:
    percent = verdicts["percent"][verdict]
    return "—" if percent is None else f"{percent:.1f}% ({verdicts['counts'][verdict]})"


def _published_label(row: dict[str, Any]) -> str:
    return f"{row['model']} (published{': ' + row['source'] if row.get('source') else ''})"


def _blocks(metrics: dict[str, Any], plots: list[str]) -> list[Block]:
    judged, human = metrics.get("judged") or [], metrics.get("human") or []
    published = metrics.get("published") or []
    blocks: list[Block] = [("h1", "Evaluation report")]
    if metrics.get("meta"):
        blocks += [
            ("h2", "Run"),
            _table(["key", "value"], [[k, _plain(v)] for k, v in metrics["meta"].items()]),
        ]
    if judged or human:
        blocks += _score_tables(judged, published)
        blocks += _verdict_table(judged, human, published)
        blocks += _parse_failures(judged)
        blocks += _pass_table(metrics.get("judge_passes") or [])
        blocks += _dimension_table(judged)
        blocks += _error_table([*judged, *human])
        blocks += _category_tables([*judged, *human])
        blocks += _human_tables(human, metrics.get("judge_vs_human") or [])
    else:
        blocks.append(("p", "No judgments to report."))
    blocks += _comparison_table(metrics.get("comparisons") or [])
    blocks += _caption_tables(metrics.get("captions") or [], metrics.get("quarantine") or {})
    for name, stats in (metrics.get("consistency") or {}).items():
        blocks += [("h2", f"Judge consistency: {name.replace('_', ' ')}")]
        blocks.append(_table(["metric", "value"], [[k, _plain(v)] for k, v in stats.items()]))
    if plots:
        blocks += [("h2", "Plots"), *(("img", name) for name in plots)]
    return blocks


def _table(header: list[str], rows: list[list[str]]) -> Block:
    return ("table", (header, rows))


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)


def _score_tables(judged: list[dict], published: list[dict]) -> list[Block]:
    if not judged:
        return []
    blocks: list[Block] = [
        ("h2", "Judge scores"),
        (
            "p",
            "Mean overall judge score (1-5) with its 95% bootstrap confidence interval; n counts the "
            "replies that parsed.",
        ),
    ]
    for judge in sorted({c["judge"] for c in judged}):
        cells = [c for c in judged if c["judge"] == judge]
        benchmarks = sorted({c["benchmark"] for c in cells})
        by_key = {(c["model"], c["benchmark"]): c for c in cells}
        rows = [
            [
                model,
                *(_ci(by_key[(model, b)]["overall"]) if (model, b) in by_key else "—" for b in benchmarks),
            ]
            for model in sorted({c["model"] for c in cells})
        ]
        for row in published:
            if row.get("mean") is not None and row.get("benchmark") in benchmarks:
                cells_out = [f"{row['mean']:.2f}" if b == row["benchmark"] else "" for b in benchmarks]
                rows.append([_published_label(row), *cells_out])
        blocks += [("h3", f"Judge: {judge}"), _table(["model", *benchmarks], rows)]
    return blocks


def _verdict_table(judged: list[dict], human: list[dict], published: list[dict]) -> list[Block]:
    rows = [
        [
            c["judge"],
            c["model"],
            c["benchmark"],
            str(c["verdicts"]["n"]),
            *(_rate(c["verdicts"], v) for v in VERDICTS),
        ]
        for c in [*judged, *human]
    ]
    for row in published:
        if any(row.get(v) is not None for v in VERDICTS):
            rates = [f"{row[v]:.1f}%" if row.get(v) is not None else "—" for v in VERDICTS]
            rows.append(["published", _published_label(row), row.get("benchmark", ""), "", *rates])
    header = ["judged by", "model", "benchmark", "labelled", *(_VERDICT_LABELS[v] for v in VERDICTS)]
    return [("h2", "Verdicts"), _table(header, rows)]


def _parse_failures(judged: list[dict]) -> list[Block]:
    if not judged:
        return []
    total = sum(c["n"] for c in judged)
    verdict = sum(c["parse_failures"]["verdict"] for c in judged)
    overall = sum(c["parse_failures"]["overall"] for c in judged)
    if verdict == overall == 0:
        note: Block = ("p", f"All {total} judge replies parsed.")
    else:
        note = (
            "alert",
            f"Parse failures: {verdict} of {total} judge replies gave no verdict and {overall} no overall "
            "score. They are left out of the means and rates above, never guessed.",
        )
    rows = [
        [
            c["judge"],
            c["model"],
            c["benchmark"],
            str(c["n"]),
            *(str(c["parse_failures"][k]) for k in ("verdict", "overall")),
        ]
        for c in judged
    ]
    header = ["judge", "model", "benchmark", "replies", "no verdict", "no overall"]
    return [("h2", "Parse failures"), note, _table(header, rows)]


def _dimension_table(judged: list[dict]) -> list[Block]:
    names = list(dict.fromkeys(d for c in judged for d in c["dimensions"]))
    if not names:
        return []
    rows = [
        [c["judge"], c["model"], c["benchmark"], *(_ci(c["dimensions"].get(d)) for d in names)]
        for c in judged
    ]
    return [
        ("h2", "Per dimension"),
        ("p", "Mean judge score per rubric dimension (1-5) with its 95% bootstrap confidence interval."),
        _table(["judge", "model", "benchmark", *names], rows),
    ]


def _error_table(cells: list[dict]) -> list[Block]:
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
        _table(["judged by", "model", "benchmark", "labelled", *ERROR_TYPES], rows),
    ]


def _category_tables(cells: list[dict]) -> list[Block]:
    blocks: list[Block] = []
    for benchmark in sorted({c["benchmark"] for c in cells if c["categories"]}):
        rows = [
            [
                c["judge"],
                c["model"],
                category,
                str(s["n"]),
                _ci(s["overall"]),
                *(_rate(s["verdicts"], v) for v in VERDICTS),
            ]
            for c in cells
            if c["benchmark"] == benchmark
            for category, s in c["categories"].items()
        ]
        header = [
            "judged by",
            "model",
            "category",
            "rows",
            "mean score",
            *(_VERDICT_LABELS[v] for v in VERDICTS),
        ]
        blocks += [("h3", benchmark), _table(header, rows)]
    return [("h2", "Per category"), *blocks] if blocks else []


def _human_tables(human: list[dict], versus: list[dict]) -> list[Block]:
    blocks: list[Block] = []
    if human:
        rows = [
            [
                c["model"],
                c["benchmark"],
                str(c["n"]),
                str(c["items"]),
                str(c["annotators"]),
                str(c["inter_annotator"]["items"]),
                _num(c["inter_annotator"]["agreement"]),
                _num(c["inter_annotator"]["fleiss_kappa"]),
            ]
            for c in human
        ]
        header = [
            "model",
            "benchmark",
            "annotations",
            "items",
            "annotators",
            "multi-rated items",
            "agreement",
            "Fleiss κ",
        ]
        blocks += [
            ("h2", "Human evaluation"),
            (
                "p",
                "Verdict rates are in the Verdicts table; agreement is over items rated by two or more people.",
            ),
            _table(header, rows),
        ]
    if versus:
        rows = [
            [
                v["judge"],
                v["model"],
                v["benchmark"],
                str(v["items"]),
                str(v["skipped"]),
                _num(v["agreement"]),
                _num(v["kappa"]),
            ]
            for v in versus
        ]
        blocks += [
            ("h2", "Judge vs human"),
            (
                "p",
                "The judge's verdict against the human majority verdict on the same instruction; items "
                "without both (unparsed, or a tied human vote) are skipped.",
            ),
            _table(["judge", "model", "benchmark", "paired items", "skipped", "agreement", "Cohen κ"], rows),
        ]
        for v in versus:
            confusion = [
                [_VERDICT_LABELS[j], *(str(v["confusion"][j][h]) for h in VERDICTS)] for j in VERDICTS
            ]
            blocks += [
                ("h3", f"{v['model']} on {v['benchmark']}: judge {v['judge']} (rows) vs human (columns)"),
                _table(["judge \\ human", *(_VERDICT_LABELS[h] for h in VERDICTS)], confusion),
            ]
    return blocks


def _pass_table(cells: list[dict]) -> list[Block]:
    if not cells:
        return []
    rows = []
    for c in cells:
        consistency = c["self_consistency"] or {}
        rows.append(
            [
                c["judge"],
                c["model"],
                c["benchmark"],
                str(c["replies"]),
                str(c["parsed"]),
                ", ".join(f"{k}: {v}" for k, v in c["failures"].items()) or "—",
                _num(consistency.get("mean_abs_deviation")),
                _num(consistency.get("exact_agreement")),
            ]
        )
    header = [
        "judge",
        "model",
        "benchmark",
        "replies",
        "parsed",
        "why not parsed",
        "pass MAD",
        "passes agree",
    ]
    return [
        ("h2", "Judge replies per pass"),
        (
            "p",
            "Every judge reply, pass by pass. A judgment averages its parsed passes; with several passes, "
            "'pass MAD' is the mean distance of a pass's overall score to the instruction's mean and "
            "'passes agree' the share of instructions whose passes gave the same score.",
        ),
        _table(header, rows),
    ]


def _comparison_table(cells: list[dict]) -> list[Block]:
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
            _num(c["a_win_rate"]),
            _num(c["position_swap"]["agreement"]),
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
        _table(header, rows),
    ]


def _caption_tables(cells: list[dict], quarantine: dict[str, dict[str, int]]) -> list[Block]:
    if not cells and not quarantine:
        return []
    blocks: list[Block] = [("h2", "Captions and failure-mode checks")]
    if cells:
        rows = []
        for c in cells:
            flip, lint, attrs = c["flip"], c["viewpoint_lint"], c["attribute_coverage"]
            rows.append(
                [
                    c["model"],
                    c["benchmark"],
                    str(c["pairs"]),
                    str(c["parsed"]),
                    str(c["unparsed"]),
                    str(c["engine_errors"]),
                    "—" if flip is None else f"{_num(flip['rate'])} ({flip['applicable']} applicable)",
                    "—" if lint is None else f"{_num(lint['rate'])} ({lint['flagged']}/{lint['checked']})",
                    "—" if attrs is None else _ci(attrs),
                    "—"
                    if attrs is None
                    else ", ".join(f"{k}: {v}" for k, v in attrs["missing"].items()) or "—",
                ]
            )
        header = [
            "model",
            "benchmark",
            "pairs",
            "parsed",
            "unparsed",
            "engine errors",
            "flip consistency",
            "viewpoint-lint rate",
            "attribute coverage",
            "attributes missed",
        ]
        blocks += [
            (
                "p",
                "Unparsed instructions are not judged and not guessed. Flip consistency: share of pairs "
                "with a left/right to check whose mirrored pair got the mirrored instruction. Viewpoint "
                "lint: share of instructions with a finding (a bare left/right, camera and object motion "
                "confused). Attribute coverage (0-1, 95% CI) against the benchmark's reference.",
            ),
            _table(header, rows),
        ]
    if quarantine:
        rows = [
            [b, r, str(n)] for b, reasons in sorted(quarantine.items()) for r, n in sorted(reasons.items())
        ]
        blocks += [
            ("h3", "Quarantined pairs"),
            (
                "p",
                "Pairs that could not be read or failed the image checks; they are not in any number above.",
            ),
            _table(["benchmark", "reason", "pairs"], rows),
        ]
    return blocks


# --- rendering --------------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(blocks: list[Block]) -> str:
    lines: list[str] = []
    for kind, payload in blocks:
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + payload, ""]
        elif kind == "p":
            lines += [payload, ""]
        elif kind == "alert":
            lines += [f"> **{payload}**", ""]
        elif kind == "img":
            lines += [f"![{payload}]({payload})", ""]
        else:
            header, rows = payload
            lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            lines.append("")
    return "\n".join(lines)


_STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:left}th{background:#f3f3f3}.alert{background:#fdecea;border-left:4px solid #c44e52;
padding:0.5em 1em}img{max-width:100%;display:block;margin:1em 0}"""


def _html(blocks: list[Block], images: dict[str, bytes]) -> str:
    out = [
        "<!doctype html>",
        '<html><head><meta charset="utf-8"><title>Evaluation report</title>',
        f"<style>{_STYLE}</style></head><body>",
    ]
    for kind, payload in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{html.escape(payload)}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{html.escape(payload)}</p>")
        elif kind == "alert":
            out.append(f'<p class="alert"><strong>{html.escape(payload)}</strong></p>')
        elif kind == "img":
            data = base64.b64encode(images[payload]).decode()
            out.append(f'<img alt="{html.escape(payload)}" src="data:image/png;base64,{data}">')
        else:
            header, rows = payload
            out.append(
                "<table><thead><tr>"
                + "".join(f"<th>{html.escape(h)}</th>" for h in header)
                + "</tr></thead><tbody>"
            )
            out += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows]
            out.append("</tbody></table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
