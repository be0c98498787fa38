"""Benchmark layouts as published on the dataset hub, read without Ray: format detection of a hub
snapshot (`README.md` + `data/<split>-*.parquet`), and the rows the readers make of each Parquet record
(ByteMorph-Bench: `image_id` the pair id, `edit_prompt` the instruction, `edit_type` the category;
HQ-Edit: `edit` / `inverse_edit`). `tests/test_readers.py` reads the same snapshots through Ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from published_layouts import write_bytemorph_bench, write_hq_edit

from editcaption.io import detect_format
from editcaption.io.bytemorph import _parquet_rows as bytemorph_rows
from editcaption.io.hqedit import _rows as hqedit_rows
from editcaption.schema import pair_id_for


@pytest.fixture(scope="module")
def samples(sample_pairs_dir: Path) -> list[dict[str, Any]]:
    out = []
    for folder in sorted(p for p in sample_pairs_dir.iterdir() if p.is_dir())[:6]:
        meta = json.loads((folder / "meta.json").read_text())
        out.append(
            {"id": folder.name, "source": (folder / "source.png").read_bytes(),
             "target": (folder / "target.png").read_bytes(), **meta}
        )  # fmt: skip
    return out


def _rows(reader, folder: Path) -> list[dict[str, Any]]:
    files = sorted((folder / "data").glob("*.parquet"))
    return [
        row
        for f in files
        for row in reader({"file": str(f)}, base=str(folder / "data"), storage_options=None)
    ]


def test_hub_snapshots_are_detected(tmp_path: Path, samples: list[dict[str, Any]]):
    bm = write_bytemorph_bench(tmp_path / "bm", samples)
    hq = write_hq_edit(tmp_path / "hq", samples)
    assert (
        detect_format(str(bm))
        == detect_format(str(bm / "data" / "test-00000-of-00002.parquet"))
        == "bytemorph"
    )
    assert detect_format(str(hq)) == detect_format(str(hq / "data")) == "hqedit"


def test_bytemorph_bench_records_become_pairs(tmp_path: Path, samples: list[dict[str, Any]]):
    rows = _rows(bytemorph_rows, write_bytemorph_bench(tmp_path / "bm", samples))
    assert [r["pair_id"] for r in rows] == [s["id"] for s in samples]
    for i, (row, s) in enumerate(zip(rows, samples, strict=True)):
        assert row["quarantine_reason"] is None and row["dataset"] == "bytemorph"
        assert (row["source"], row["target"]) == (s["source"], s["target"])
        assert row["reference_instruction"] == s["instruction"]  # edit_prompt, not the rewrite column
        assert row["category"] == f"{i % 5}_{s['category']}"


def test_hqedit_records_become_pairs(tmp_path: Path, samples: list[dict[str, Any]]):
    rows = _rows(hqedit_rows, write_hq_edit(tmp_path / "hq", samples))
    assert [r["pair_id"] for r in rows] == [pair_id_for(s["source"], s["target"]) for s in samples]
    assert [(r["reference_instruction"], r["inverse_instruction"]) for r in rows] == [
        (s["instruction"], s["inverse_instruction"]) for s in samples
    ]


def test_bytemorph_records_without_an_image_or_id_are_handled(tmp_path: Path, samples: list[dict[str, Any]]):
    s = samples[0]
    table = pa.table(
        {
            "edit_type": ["1_camera_motion", "2_object_motion", "3_human_motion"],
            "image_id": ["ok", "no-target", None],
            "src_img": [{"bytes": s["source"], "path": None}] * 3,
            "tgt_img": [{"bytes": s["target"], "path": None}, None, {"bytes": s["target"], "path": None}],
            "edit_prompt": ["Pan left.", "Lift the cup.", "Raise the arm."],
        }
    )
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "test-00000-of-00001.parquet")
    ok, missing, unnamed = _rows(bytemorph_rows, tmp_path)
    assert ok["pair_id"] == "ok" and ok["quarantine_reason"] is None and ok["category"] == "1_camera_motion"
    assert missing["pair_id"] == "no-target" and missing["quarantine_reason"] == "missing_field"
    assert "tgt_img" in missing["quarantine_detail"]
    assert unnamed["quarantine_reason"] is None and unnamed["pair_id"] == pair_id_for(
        s["source"], s["target"]
    )
