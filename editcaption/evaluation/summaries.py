"""Metrics cells the eval job adds beside `report.summarise`: captions and their failure-mode checks,
judge passes (parse failures per pass, self-consistency), and pairwise comparisons (win rates,
position-swap agreement). Each function takes the job's output rows and returns plain JSON.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from editcaption.checks.flip import flip_consistency_rate
from editcaption.evaluation.metrics import judge_self_consistency, mean_ci, position_swap_agreement


def _grouped(rows: Iterable[dict[str, Any]], *keys: str) -> dict[tuple, list[dict[str, Any]]]:
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in keys)].append(row)
    return dict(sorted(groups.items()))


def caption_cells(instructions: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (captioner, benchmark): how many instructions parsed, and the failure-mode check rates.

    `flip` is `checks.flip.flip_consistency_rate` over pairs that were checked; `viewpoint_lint` the
    share of parsed instructions with a finding, by kind; `attribute_coverage` the mean coverage score
    (95% CI) over pairs with a reference, and how often each attribute kind was missed or wrong.
    Checks that were off have no rows and give None.
    """
    cells = []
    for (model, benchmark), rows in _grouped(instructions, "model", "benchmark").items():
        parsed = [r for r in rows if r["instruction"] is not None]
        flips = [r["flip_verdict"] for r in rows if r["flip_verdict"] is not None]
        linted = [r for r in parsed if r["lint"] is not None]
        kinds = Counter(kind for r in linted for kind in r["lint"])
        covered = [r for r in parsed if r["attribute_score"] is not None]
        cells.append(
            {
                "model": model,
                "benchmark": benchmark,
                "pairs": len(rows),
                "parsed": len(parsed),
                "unparsed": sum(r["instruction"] is None and r["error"] is None for r in rows),
                "engine_errors": sum(r["error"] is not None for r in rows),
                "flip": flip_consistency_rate(flips) if flips else None,
                "viewpoint_lint": {
                    "checked": len(linted),
                    "flagged": sum(bool(r["lint"]) for r in linted),
                    "rate": sum(bool(r["lint"]) for r in linted) / len(linted) if linted else None,
                    "kinds": dict(sorted(kinds.items())),
                }
                if linted
                else None,
                "attribute_coverage": {
                    **mean_ci([r["attribute_score"] for r in covered]),
                    "missing": dict(
                        sorted(Counter(k for r in covered for k in r["attributes_missing"]).items())
                    ),
                    "wrong": dict(sorted(Counter(k for r in covered for k in r["attributes_wrong"]).items())),
                }
                if covered
                else None,
            }
        )
    return cells


def pass_cells(passes: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (judge, captioner, benchmark): judge replies per pass that parsed, why the others did not,
    and (with several passes) `metrics.judge_self_consistency` of the overall score."""
    cells = []
    for (judge, model, benchmark), rows in _grouped(passes, "judge", "model", "benchmark").items():
        per_item: dict[str, list[float | None]] = defaultdict(list)
        for r in rows:
            per_item[r["pair_id"]].append(r["overall"])
        failures = Counter(r["error"] for r in rows if r["error"] is not None)
        cells.append(
            {
                "judge": judge,
                "model": model,
                "benchmark": benchmark,
                "replies": len(rows),
                "parsed": len(rows) - sum(failures.values()),
                "failures": dict(sorted(failures.items())),
                "self_consistency": judge_self_consistency(per_item.values())
                if any(len(v) > 1 for v in per_item.values())
                else None,
            }
        )
    return cells


def comparison_cells(comparisons: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (judge, model A, model B, benchmark): wins counted only when both orders agree, ties,
    order-dependent answers, unparsed ones, and `metrics.position_swap_agreement`."""
    cells = []
    keys = ("judge", "model_a", "model_b", "benchmark")
    for (judge, a, b, benchmark), rows in _grouped(comparisons, *keys).items():
        outcomes = Counter(r["outcome"] for r in rows)
        decided = outcomes["A"] + outcomes["B"] + outcomes["tie"]
        cells.append(
            {
                "judge": judge,
                "model_a": a,
                "model_b": b,
                "benchmark": benchmark,
                "comparisons": len(rows),
                "a_wins": outcomes["A"],
                "b_wins": outcomes["B"],
                "ties": outcomes["tie"],
                "inconsistent": outcomes["inconsistent"],
                "unparsed": outcomes[None],
                "a_win_rate": outcomes["A"] / decided if decided else None,
                "position_swap": position_swap_agreement([r["ab"] for r in rows], [r["ba"] for r in rows]),
            }
        )
    return cells
