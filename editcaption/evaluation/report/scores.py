"""Report sections on judge scores: mean overall score per judge, per rubric dimension and per category."""

from __future__ import annotations

from editcaption.evaluation.report.tables import VERDICT_LABELS, Block, ci, published_label, rate, table
from editcaption.schema import VERDICTS


def score_tables(judged: list[dict], published: list[dict]) -> list[Block]:
    """One table per judge: models by benchmarks, mean overall score with its CI, published means below."""
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
                *(ci(by_key[(model, b)]["overall"]) if (model, b) in by_key else "—" for b in benchmarks),
            ]
            for model in sorted({c["model"] for c in cells})
        ]
        for row in published:
            if row.get("mean") is not None and row.get("benchmark") in benchmarks:
                cells_out = [f"{row['mean']:.2f}" if b == row["benchmark"] else "" for b in benchmarks]
                rows.append([published_label(row), *cells_out])
        blocks += [("h3", f"Judge: {judge}"), table(["model", *benchmarks], rows)]
    return blocks


def dimension_table(judged: list[dict]) -> list[Block]:
    """Mean score per rubric dimension; absent when the judge replies carried no dimension scores."""
    names = list(dict.fromkeys(d for c in judged for d in c["dimensions"]))
    if not names:
        return []
    rows = [
        [c["judge"], c["model"], c["benchmark"], *(ci(c["dimensions"].get(d)) for d in names)] for c in judged
    ]
    return [
        ("h2", "Per dimension"),
        ("p", "Mean judge score per rubric dimension (1-5) with its 95% bootstrap confidence interval."),
        table(["judge", "model", "benchmark", *names], rows),
    ]


def category_tables(cells: list[dict]) -> list[Block]:
    """Per benchmark with categories: each category's score and verdict rates, where a model's weakness hides."""
    blocks: list[Block] = []
    for benchmark in sorted({c["benchmark"] for c in cells if c["categories"]}):
        rows = [
            [
                c["judge"],
                c["model"],
                category,
                str(s["n"]),
                ci(s["overall"]),
                *(rate(s["verdicts"], v) for v in VERDICTS),
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
            *(VERDICT_LABELS[v] for v in VERDICTS),
        ]
        blocks += [("h3", benchmark), table(header, rows)]
    return [("h2", "Per category"), *blocks] if blocks else []
