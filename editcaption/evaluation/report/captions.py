"""Report section on the captions: parse and engine failures, the failure-mode checks, quarantined pairs."""

from __future__ import annotations

from editcaption.evaluation.report.tables import Block, ci, num, table


def caption_tables(cells: list[dict], quarantine: dict[str, dict[str, int]]) -> list[Block]:
    """Per captioner and benchmark: what parsed and what the failure-mode checks found; then the
    pairs quarantined before captioning, so every pair is accounted for."""
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
                    "—" if flip is None else f"{num(flip['rate'])} ({flip['applicable']} applicable)",
                    "—" if lint is None else f"{num(lint['rate'])} ({lint['flagged']}/{lint['checked']})",
                    "—" if attrs is None else ci(attrs),
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
            table(header, rows),
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
            table(["benchmark", "reason", "pairs"], rows),
        ]
    return blocks
