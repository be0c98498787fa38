"""Committed pair shards carry their format: typed candidates and scores, and a marker that lets a resume
refuse a folder written in the old layout (candidates and scores as JSON strings) instead of mis-reading it."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem
from typer.testing import CliRunner

from editcaption.cli import app
from editcaption.schema import Candidate, pair_record_types
from editcaption.synthesis.shards import (
    FORMAT_KEY,
    SHARD_FORMAT,
    ShardFormatError,
    commit_shard,
    done_pair_ids,
    iter_committed,
)

ROOT = Path(__file__).resolve().parents[1]


def _candidate(pair_id: str) -> dict:
    return Candidate(
        pair_id=pair_id,
        candidate_id=f"{pair_id}:0",
        instruction="Move the cup to the left.",
        raw_text="Move the cup to the left.",
        model="annotator",
        prompt_version="v",
        parsed=True,
    ).to_row()


def _old_shard(pairs: Path) -> Path:
    """A shard as editcaption wrote them before the typed columns: JSON strings, no format marker."""
    pairs.mkdir(parents=True)
    path = pairs / "shard-0123456789abcdef01234567.parquet"
    row = {"pair_id": "p1", "status": "kept", "candidates": json.dumps([_candidate("p1")]), "scores": "[]"}
    pq.write_table(pa.Table.from_pylist([row]), path)
    return path


def test_a_committed_shard_has_the_derived_types_and_its_format(tmp_path):
    """Even a table whose inference typed an all-None field as null is written with schema.py's types."""
    table = pa.Table.from_pylist([{"pair_id": "p1", "candidates": [_candidate("p1")], "scores": []}])
    assert table.schema.field("candidates").type != pair_record_types()["candidates"]
    path = commit_shard(LocalFileSystem(), str(tmp_path / "pairs"), table)
    schema = pq.read_schema(path)
    assert schema.metadata[FORMAT_KEY] == SHARD_FORMAT
    assert {n: schema.field(n).type for n in pair_record_types()} == pair_record_types()
    assert done_pair_ids(str(tmp_path / "pairs")) == {"p1"}
    (row,) = iter_committed(str(tmp_path / "pairs"))
    assert row["candidates"] == [_candidate("p1")] and row["scores"] == []


@pytest.mark.parametrize("read", [done_pair_ids, lambda uri: list(iter_committed(uri))])
def test_shards_of_the_old_json_format_are_refused_by_folder(tmp_path, read):
    pairs = tmp_path / "out" / "pairs"
    _old_shard(pairs)
    with pytest.raises(ShardFormatError, match=f"{pairs} holds pair shards of format 1") as refused:
        read(str(pairs))
    assert "Start a fresh output folder" in str(refused.value)


def test_synthesize_into_an_old_format_folder_stops_with_the_reason(tmp_path):
    """Before Ray or an engine starts: the CLI prints the reason and exits 2, and the shard is untouched."""
    shard = _old_shard(tmp_path / "out" / "pairs")
    before = shard.read_bytes()
    args = ["synthesize", "--config", str(ROOT / "ray_jobs/configs/demo.yaml"), "--verbose"]
    args += ["--input", str(ROOT / "editcaption/data/sample_pairs"), "--output", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Start a fresh output folder" in " ".join(result.output.split())
    assert shard.read_bytes() == before
