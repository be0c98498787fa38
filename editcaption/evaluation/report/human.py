"""Report sections on human evaluation: annotation counts, inter-annotator agreement, judge vs human."""

from __future__ import annotations

from editcaption.evaluation.report.tables import VERDICT_LABELS, Block, num, table
from editcaption.schema import VERDICTS


def human_tables(human: list[dict], versus: list[dict]) -> list[Block]:
    """Human annotation counts and agreement, then the judge against the human majority, with its
    confusion matrix per cell (rows: judge, columns: human)."""
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
                num(c["inter_annotator"]["agreement"]),
                num(c["inter_annotator"]["fleiss_kappa"]),
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
            table(header, rows),
        ]
    if versus:
        rows = [
            [
                v["judge"],
                v["model"],
                v["benchmark"],
                str(v["items"]),
                str(v["skipped"]),
                num(v["agreement"]),
                num(v["kappa"]),
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
            table(["judge", "model", "benchmark", "paired items", "skipped", "agreement", "Cohen κ"], rows),
        ]
        for v in versus:
            confusion = [
                [VERDICT_LABELS[j], *(str(v["confusion"][j][h]) for h in VERDICTS)] for j in VERDICTS
            ]
            blocks += [
                ("h3", f"{v['model']} on {v['benchmark']}: judge {v['judge']} (rows) vs human (columns)"),
                table(["judge \\ human", *(VERDICT_LABELS[h] for h in VERDICTS)], confusion),
            ]
    return blocks
