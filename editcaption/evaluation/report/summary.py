"""Summarising judgment rows into the report's metrics cells (the shape is in the package docstring).

Judged cells are per (VLM judge, captioner, benchmark), human cells per (captioner, benchmark);
both share scores, verdict rates, error types and breakdowns (`_cell`). Human items rated by several
people feed inter-annotator agreement, and their majority verdict is what the judge is compared with.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

from editcaption.agreement import fleiss_kappa, human_eval_rates, percent_agreement, rating_table
from editcaption.evaluation.metrics import judge_human_agreement, mean_ci
from editcaption.prompts.judge import DIMENSIONS
from editcaption.schema import ERROR_TYPES, Judgment

HUMAN = "human"
BIN_CENTRES = [1 + i / 2 for i in range(9)]  # 1, 1.5, ..., 5: the overall-score histogram's bins
_BIN_EDGES = [c - 0.25 for c in BIN_CENTRES] + [5.25]


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
    """The parsed overall scores (unparsed ones are left out, never guessed)."""
    return [r["overall"] for r in rows if r["overall"] is not None]


def _cell(rows: list[dict]) -> dict[str, Any]:
    """What judged and human cells share: scores, verdict rates, error types, breakdowns."""
    overall = _overall(rows)
    counts = np.histogram(overall, bins=_BIN_EDGES)[0] if overall else [0] * len(BIN_CENTRES)
    names = [d for d in DIMENSIONS if any(d in r["scores"] for r in rows)]
    names += sorted({d for r in rows for d in r["scores"]} - set(names))
    by_category: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row["category"] is not None:
            by_category[row["category"]].append(row)
    return {
        "n": len(rows),
        "overall": mean_ci(overall),
        "overall_histogram": {f"{c:g}": int(k) for c, k in zip(BIN_CENTRES, counts, strict=True)},
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
    """A VLM judge's cell: the shared statistics plus how many replies did not parse."""
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
    """The humans' cell for one captioner and benchmark: shared statistics plus inter-annotator agreement."""
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
    """Judge against human on the instructions both labelled, each side's majority verdict per item."""
    judge_items, human_items = _by_item(judged), _by_item(human)
    keys = sorted(judge_items.keys() & human_items.keys())
    return judge_human_agreement(
        [_majority(judge_items[k]) for k in keys], [_majority(human_items[k]) for k in keys]
    )
