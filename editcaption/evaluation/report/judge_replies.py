"""Report sections on the judge's replies themselves: parse failures, each pass, and its consistency."""

from __future__ import annotations

from typing import Any

from editcaption.evaluation.report.tables import Block, num, plain, table


def parse_failure_tables(judged: list[dict]) -> list[Block]:
    """How many judge replies gave no verdict or no score: they are left out, so the reader must see how many."""
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
    return [("h2", "Parse failures"), note, table(header, rows)]


def pass_table(cells: list[dict]) -> list[Block]:
    """Every pass's replies and, with several passes, how far they disagree with each other."""
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
                num(consistency.get("mean_abs_deviation")),
                num(consistency.get("exact_agreement")),
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
        table(header, rows),
    ]


def consistency_tables(consistency: dict[str, dict[str, Any]]) -> list[Block]:
    """One table per consistency measure (self-consistency, position swap), its metrics as given."""
    blocks: list[Block] = []
    for name, stats in consistency.items():
        blocks += [("h2", f"Judge consistency: {name.replace('_', ' ')}")]
        blocks.append(table(["metric", "value"], [[k, plain(v)] for k, v in stats.items()]))
    return blocks
