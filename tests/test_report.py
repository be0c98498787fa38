"""The run report accounts for every pair, shouts when counts do not add up, and survives empty runs."""

from __future__ import annotations

from pathlib import Path

import yaml
from PIL import Image

from editcaption.synthesis.report import identity_check, write_report

SUMMARY = {
    "pairs": 100,
    "kept": 70,
    "filtered": 20,
    "quarantined": 10,
    "quarantine_reasons": {"truncated_image": 4, "size_mismatch": 6},
    "routed_to_review": 9,
    "seconds": 50.0,
    "stage_seconds": {"caption": 30.0, "score": 20.0},
    "thresholds": {"overall": 6.5, "semantic_consistency": None},
    "config": {"input": "s3://bucket/pairs", "scoring": {"threshold": 6.5}},
}


def test_report_files_and_counts(tmp_path: Path) -> None:
    names = write_report(SUMMARY, [7.0, 3.0, 6.6], [8.0, 2.0, 7.0], [9.0, 6.0, 6.5], str(tmp_path))
    assert names == ["score_histograms.png", "report.md"]
    assert Image.open(tmp_path / "score_histograms.png").format == "PNG"

    md = (tmp_path / "report.md").read_text()
    assert "MISMATCH" not in md and "100 = 70 + 20 + 10" in md
    for row in ("| input | 100 |", "| kept | 70 |", "| filtered | 20 |", "| quarantined | 10 |"):
        assert row in md
    assert "size_mismatch | 6 |" in md and "| routed to review | 9 |" in md
    assert "| whole run | 50.0 | 2.00 |" in md and "| caption | 30.0 | 3.33 |" in md
    resumed = tmp_path / "resumed"
    write_report({**SUMMARY, "new_pairs": 40, "stage_seconds": {}}, [], [], [], str(resumed))
    assert "| whole run | 50.0 | 0.80 |" in (resumed / "report.md").read_text()
    assert "![score histograms](score_histograms.png)" in md and "threshold on overall: 6.5" in md
    config = md.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(config) == SUMMARY["config"]


def test_mismatch_is_flagged(tmp_path: Path) -> None:
    write_report({**SUMMARY, "kept": 65}, [], [], [], str(tmp_path))
    md = (tmp_path / "report.md").read_text()
    assert "**MISMATCH**" in md and "+5 pairs unaccounted for" in md

    assert not identity_check({**SUMMARY, "quarantine_reasons": {"size_mismatch": 3}})[0]
    holds, sentence = identity_check({k: v for k, v in SUMMARY.items() if k != "filtered"})
    assert not holds and "MISMATCH" in sentence and "filtered" in sentence


def test_empty_run(tmp_path: Path) -> None:
    summary = {"pairs": 0, "kept": 0, "filtered": 0, "quarantined": 0, "routed_to_review": 0, "seconds": 0.0}
    out = tmp_path / "nested" / "report"
    assert write_report(summary, [], [], [], str(out)) == ["score_histograms.png", "report.md"]
    md = (out / "report.md").read_text()
    assert "MISMATCH" not in md and "No overall scores." in md and "Not recorded" in md
    assert Image.open(out / "score_histograms.png").size[0] > 0
