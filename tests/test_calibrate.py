"""Threshold calibration on labelled samples whose answer is worked out by hand."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from editcaption.synthesis.calibrate import calibrate, is_correct

# (overall, SC, correct). Worked out by hand: at SC >= 3 (H, high overall but low SC and wrong, is
# out) and overall >= 5, A B C D E are kept, 4 of them correct: precision 0.8, every correct one kept.
# Any looser filter lets in H, F or G (precision < 0.8); every filter keeping the same five sets SC
# >= 3 or higher, and the loosest SC is reported. Precision 1 keeps at most A B C (overall >= 7).
SAMPLE = [
    (9.0, 9.0, True),  # A
    (8.0, 8.0, True),  # B
    (7.0, 7.0, True),  # C
    (6.0, 8.0, False),  # D
    (5.0, 9.0, True),  # E
    (4.0, 6.0, False),  # F
    (3.0, 3.0, False),  # G
    (9.5, 2.0, False),  # H
    (None, None, True),  # unparsed scores: left out
]


def test_keeps_the_most_at_the_target_precision():
    result = calibrate(SAMPLE, target_precision=0.8)
    chosen = result.chosen
    assert (chosen.min_overall, chosen.min_semantic_consistency) == (5.0, 3.0)
    assert (chosen.kept, chosen.kept_correct, chosen.precision, chosen.recall) == (5, 4, 0.8, 1.0)
    assert (result.samples, result.correct, result.skipped_unscored) == (8, 4, 1)
    curve = {c.min_overall: (c.kept, c.precision) for c in result.curve}
    assert all(c.min_semantic_consistency == 3.0 for c in result.curve)
    assert curve[4.0] == (6, 4 / 6) and curve[7.0] == (3, 1.0) and curve[9.0] == (1, 1.0)


def test_a_stricter_target_keeps_fewer():
    chosen = calibrate(SAMPLE, target_precision=1.0).chosen
    assert (chosen.min_overall, chosen.min_semantic_consistency, chosen.kept) == (7.0, 3.0, 3)


def test_unreachable_target_says_so_and_gives_the_most_precise_filter():
    rows = [(8.0, 8.0, False), (6.0, 6.0, True), (4.0, 4.0, False)]
    result = calibrate(rows, target_precision=0.9)
    assert result.chosen is None
    assert (result.best_precision.min_overall, result.best_precision.precision) == (6.0, 0.5)


def test_bad_input_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="target precision"):
        calibrate(SAMPLE, target_precision=0)
    with pytest.raises(ValueError, match="both an overall"):
        calibrate([(None, 3.0, True)])
    with pytest.raises(ValueError, match="cannot read"):
        is_correct("maybe")
    assert [is_correct(v) for v in (True, 1, "correct", "minor_error", "critical_error", 0)] == [
        True, True, True, False, False, False
    ]  # fmt: skip


def test_cli_joins_scores_to_a_review_export_and_draws_the_curve(tmp_path):
    from editcaption.cli import app

    scored = [row for row in SAMPLE if row[0] is not None]
    pq.write_table(
        pa.table(
            {
                "pair_id": [f"p{i}" for i in range(len(scored))],
                "overall": [o for o, _, _ in scored],
                "semantic_consistency": [s for _, s, _ in scored],
            }
        ),
        tmp_path / "scores.parquet",
    )
    verdicts = [
        {"pair_id": f"p{i}", "verdict": "correct" if ok else "critical_error"}
        for i, (_, _, ok) in enumerate(scored)
    ]
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps(v) + "\n" for v in verdicts))
    args = [
        "calibrate",
        "--scores",
        str(tmp_path / "scores.parquet"),
        "--labels",
        str(tmp_path / "labels.jsonl"),
    ]
    out = ["--png", str(tmp_path / "curve.png"), "--json", str(tmp_path / "cal.json")]
    result = CliRunner().invoke(app, [*args, "--target-precision", "0.8", *out])
    assert result.exit_code == 0, result.output
    assert "min_overall: 5" in result.output and "min_semantic_consistency: 3" in result.output
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "cal.json").read_text())["chosen"]["kept"] == 5
    missing = CliRunner().invoke(app, ["calibrate", "--scores", str(tmp_path / "nope.parquet")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    strict = CliRunner().invoke(app, [*args, "--target-precision", "1.0"])
    assert strict.exit_code == 0 and "min_overall: 7" in strict.output
    pq.write_table(
        pa.table({"overall": [8.0, 6.0], "semantic_consistency": [8.0, 6.0], "correct": [False, True]}),
        tmp_path / "bad.parquet",
    )
    unreachable = CliRunner().invoke(app, ["calibrate", "--scores", str(tmp_path / "bad.parquet")])
    assert unreachable.exit_code == 1 and "no thresholds reach precision 0.9" in unreachable.output
