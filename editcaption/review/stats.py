"""What the answers say in aggregate: progress, annotator agreement and the human-evaluation rates.

Agreement is measured on the label each kind produces (refine: accept/reject, prefer: which
instruction, judge: verdict) over items answered by at least two annotators: percent agreement and
Fleiss' kappa over all of them, Cohen's kappa for each pair of annotators with shared items. The rates
(correct %, critical error % …) come from every human verdict, by captioner model and by benchmark.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from typing import Any

from editcaption.agreement import (
    cohen_kappa,
    fleiss_kappa,
    human_eval_rates,
    percent_agreement,
    rating_table,
)
from editcaption.review.store import Store

LABEL_OF = {"refine": "action", "prefer": "chosen", "judge": "verdict"}
MIN_SHARED_ITEMS = 2  # Cohen's kappa for a pair of annotators needs at least this many common items


def review_stats(store: Store, project: str | None = None) -> dict[str, Any]:
    """Progress per annotator and project, agreement per kind, human-eval rates by model and benchmark."""
    agreement = {kind: _agreement(store, kind, project) for kind in LABEL_OF}
    verdicts: list[dict[str, str]] = [
        {"verdict": r.result["verdict"], "model": r.payload["model"], "benchmark": r.payload["benchmark"]}
        for r in store.done("judge", project)
    ]
    return {
        "progress": [r for r in store.progress() if project in (None, r["project"])],
        "agreement": agreement,
        "human_eval": {
            "overall": human_eval_rates(v["verdict"] for v in verdicts),
            "by_model": _rates_by(verdicts, "model"),
            "by_benchmark": _rates_by(verdicts, "benchmark"),
        },
    }


def _agreement(store: Store, kind: str, project: str | None) -> dict[str, Any]:
    per_item: dict[int, dict[str, str]] = defaultdict(dict)
    for row in store.done(kind, project):
        per_item[row.item_id][row.annotator] = row.result[LABEL_OF[kind]]
    shared = [labels for labels in per_item.values() if len(labels) >= 2]
    out: dict[str, Any] = {
        "label": LABEL_OF[kind],
        "items_answered": len(per_item),
        "items_with_2plus": len(shared),
        "percent_agreement": None,
        "fleiss_kappa": None,
        "cohen_kappa": [],
    }
    if shared:
        ratings = [list(labels.values()) for labels in shared]
        out["percent_agreement"] = percent_agreement(ratings)
        out["fleiss_kappa"] = fleiss_kappa(rating_table(ratings)[0])
    annotators = sorted({name for labels in shared for name in labels})
    for a, b in combinations(annotators, 2):
        common = [labels for labels in shared if a in labels and b in labels]
        if len(common) >= MIN_SHARED_ITEMS:
            kappa = cohen_kappa([c[a] for c in common], [c[b] for c in common])
            out["cohen_kappa"].append({"annotators": [a, b], "items": len(common), "kappa": kappa})
    return out


def _rates_by(verdicts: list[dict[str, str]], field: str) -> dict[str, Any]:
    groups: dict[str, list[str]] = defaultdict(list)
    for v in verdicts:
        groups[v[field]].append(v["verdict"])
    return {name: human_eval_rates(group) for name, group in sorted(groups.items())}
