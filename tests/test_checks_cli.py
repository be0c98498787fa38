"""`editcaption checks`: the model-free checks from the command line, on text and on SFT Parquet files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from typer.testing import CliRunner

from editcaption.cli import app
from editcaption.schema import PreferencePair, SFTRecord


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def sft_file(path: Path, instructions: list[str]) -> Path:
    source = np.zeros((16, 24, 3), np.uint8)
    source[4, 2] = (255, 0, 0)
    target = np.zeros((16, 24, 3), np.uint8)
    rows = [
        SFTRecord(
            pair_id=f"p{i}", source=png(source), target=png(target), instruction=text, origin="synthesis"
        ).to_row()
        for i, text in enumerate(instructions)
    ]
    pq.write_table(pa.Table.from_pylist(rows, SFTRecord.arrow_schema()), path)
    return path


def test_lint_flags_a_missing_frame_and_exits_1():
    result = CliRunner().invoke(
        app, ["checks", "lint", "Move the man to the left.", "Make the cup blue."], catch_exceptions=False
    )
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [bool(line["issues"]) for line in lines] == [True, False]
    assert lines[0]["issues"][0]["kind"] == "missing_frame"


def test_lint_of_clean_instructions_exits_0():
    result = CliRunner().invoke(app, ["checks", "lint", "Move the man to the viewer's left."])
    assert result.exit_code == 0, result.output


def test_swap_mirrors_directions():
    result = CliRunner().invoke(app, ["checks", "swap", "Move the ball to the viewer's left."])
    assert result.exit_code == 0
    assert result.output.strip() == "Move the ball to the viewer's right."


def test_coverage_reports_missing_and_wrong_values():
    result = CliRunner().invoke(
        app, ["checks", "coverage", "Make the car green.", "--reference", "Make the car blue."]
    )
    report = json.loads(result.output)
    assert report["wrong"] == {"colour": ["green"]} and report["missing"] == {"colour": ["blue"]}
    assert report["score"] < 1


def test_hard_negatives_write_labelled_preference_pairs(tmp_path: Path):
    source = sft_file(tmp_path / "sft.parquet", ["Move the red ball to the viewer's left.", ""])
    out = tmp_path / "prefs" / "negatives.parquet"
    result = CliRunner().invoke(app, ["checks", "hard-negatives", "--input", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.schema.equals(PreferencePair.arrow_schema())
    rows = table.to_pylist()
    assert json.loads(result.output)["preference_pairs"] == len(rows) > 0
    orientation = [r for r in rows if r["error_type"] == "orientation"]
    assert orientation and orientation[0]["rejected"] == "Move the red ball to the viewer's right."
    assert {r["pair_id"] for r in rows} == {"p0"}  # the empty instruction gives nothing


def test_mirror_writes_only_direction_bearing_records(tmp_path: Path):
    source = sft_file(tmp_path / "sft.parquet", ["Move the ball to the left.", "Make the cup blue."])
    out = tmp_path / "mirrored.parquet"
    result = CliRunner().invoke(app, ["checks", "mirror", "--input", str(source), "--out", str(out)])
    assert json.loads(result.output) == {"records": 2, "mirrored": 1}
    (row,) = pq.read_table(out).to_pylist()
    assert row["pair_id"] == "p0:mirror" and row["instruction"] == "Move the ball to the right."
    mirrored = np.asarray(Image.open(io.BytesIO(row["source"])))
    assert tuple(mirrored[4, 21]) == (255, 0, 0)  # the red pixel moved to the other edge


def test_a_file_without_instructions_is_a_clear_error(tmp_path: Path):
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"pair_id": ["a"]}), bad)
    result = CliRunner().invoke(app, ["checks", "mirror", "--input", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "lacks column(s)" in result.output and "instruction" in result.output
