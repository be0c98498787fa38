"""Turn the committed pair shards into the datasets people use, plus the summary and the report.

Idempotent: it reads every committed pair once (`shards.iter_committed`) and rewrites its outputs
whole, so it runs the same after a fresh run, a resumed one, or on its own. Two streaming passes:
the first ranks pairs for review (it needs every priority), the second writes the outputs.
"""

from __future__ import annotations

import json
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from editcaption.checks.flip import flip_consistency_rate
from editcaption.io.exports import write_sharegpt, write_trl_parquet
from editcaption.io.fs import open_fs
from editcaption.redaction import redact
from editcaption.schema import Candidate, FilteredPair, QuarantinedPair, ReviewQueueRow, Score, SFTRecord
from editcaption.synthesis.report import write_report
from editcaption.synthesis.route import select_for_review
from editcaption.synthesis.shards import iter_committed

if TYPE_CHECKING:
    from editcaption.synthesis.config import SynthesisConfig

REVIEW_SCHEMA = ReviewQueueRow.arrow_schema()
FILTERED_SCHEMA = FilteredPair.arrow_schema()
_LIGHT = [
    "pair_id",
    "status",
    "review_priority",
    "quarantine_reason",
    "scores",
    "flip_verdict",
    "lint_findings",
]
_STAGES = {"caption (annotator busy)": "caption_seconds", "score (scorer busy)": "score_seconds"}


class _Writer:
    """A Parquet file written row group by row group, so no output is held whole in memory."""

    def __init__(self, fs: Any, path: str, schema: pa.Schema, group: int = 64) -> None:
        self.stream = fs.open(path, "wb")
        self.writer = pq.ParquetWriter(self.stream, schema)
        self.schema, self.group, self.rows, self.count = schema, group, [], 0

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.group:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.count += len(self.rows)
            self.rows = []

    def close(self) -> int:
        self.flush()
        self.writer.close()
        self.stream.close()
        return self.count


def _read_rows(fs: Any, path: str, columns: list[str]) -> Any:
    with fs.open(path, "rb") as f:
        for batch in pq.ParquetFile(f).iter_batches(columns=columns, batch_size=64):
            yield from batch.to_pylist()


@dataclass
class _Tally:
    """Pass 1 over the committed pairs: counts, score distributions and review priorities."""

    status: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    priorities: list[tuple[str, float]] = field(default_factory=list)
    overall: list[float] = field(default_factory=list)
    sc: list[float] = field(default_factory=list)
    pq: list[float] = field(default_factory=list)
    unparsed_scores: int = 0
    flips: list[str] = field(default_factory=list)
    lint: Counter[str] = field(default_factory=Counter)
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(_STAGES, 0.0))


def _tally(shards: str) -> _Tally:
    t = _Tally()
    for row in iter_committed(shards, columns=_LIGHT + list(_STAGES.values())):
        for stage, column in _STAGES.items():
            t.stage_seconds[stage] += row[column] or 0.0
        t.status[row["status"]] += 1
        if row["status"] == "quarantined":
            t.reasons[row["quarantine_reason"]] += 1
            continue
        if row.get("flip_verdict"):
            t.flips.append(row["flip_verdict"])
        t.lint.update(json.loads(row.get("lint_findings") or "[]"))
        t.priorities.append((row["pair_id"], row["review_priority"]))
        for s in row["scores"] or []:
            if s["overall"] is None:
                t.unparsed_scores += 1
            else:
                t.overall.append(s["overall"])
                t.sc.append(s["semantic_consistency"])
                t.pq.append(s["perceptual_quality"])
    return t


def _quarantined(row: dict[str, Any]) -> dict[str, Any]:
    return QuarantinedPair(
        pair_id=row["pair_id"],
        reason=row["quarantine_reason"],
        detail=row["quarantine_detail"],
        source_uri=row["source_uri"],
        target_uri=row["target_uri"],
        dataset=row["dataset"],
    ).to_row()


def _sft_record(row: dict[str, Any], model: str) -> dict[str, Any]:
    return SFTRecord(
        pair_id=row["pair_id"],
        source=row["source"],
        target=row["target"],
        instruction=row["best_instruction"],
        origin="synthesis",
        model=model,
        overall=row["best_overall"],
    ).to_row()


def _write_datasets(
    config: SynthesisConfig, fs: Any, out: str, shards: str, review: set[str]
) -> dict[str, int]:
    """Pass 2: every committed pair into the dataset it belongs to; returns rows written per file."""
    writers = {
        "sft": _Writer(fs, posixpath.join(out, "sft.parquet"), SFTRecord.arrow_schema()),
        "filtered": _Writer(fs, posixpath.join(out, "filtered.parquet"), FILTERED_SCHEMA),
        "quarantine": _Writer(fs, posixpath.join(out, "quarantine.parquet"), QuarantinedPair.arrow_schema()),
        "candidates": _Writer(fs, posixpath.join(out, "candidates.parquet"), Candidate.arrow_schema()),
        "scores": _Writer(fs, posixpath.join(out, "scores.parquet"), Score.arrow_schema()),
    }
    queue: list[dict[str, Any]] = []
    for row in iter_committed(shards):
        if row["status"] == "quarantined":
            writers["quarantine"].add(_quarantined(row))
            continue
        for c in row["candidates"]:
            writers["candidates"].add(c)
        for s in row["scores"]:
            writers["scores"].add(s)
        if row["status"] == "kept":
            writers["sft"].add(_sft_record(row, config.annotator.model))
        else:
            writers["filtered"].add({k: row[k] for k in FILTERED_SCHEMA.names})
        if row["pair_id"] in review:
            reasons = json.loads(row["review_reasons"])
            queue.append({**{k: row[k] for k in REVIEW_SCHEMA.names}, "review_reasons": reasons})
    written = {name: w.close() for name, w in writers.items()}
    written["review_queue"] = _write_review_queue(fs, posixpath.join(out, "review_queue.parquet"), queue)
    return written


def _write_review_queue(fs: Any, path: str, queue: list[dict[str, Any]]) -> int:
    """Highest priority first (equal ones by pair_id), the order `review import` hands items out in. The
    queue is held whole to sort it: it is sized for people (`routing.review_share` of the pairs)."""
    queue.sort(key=lambda r: (-r["review_priority"], r["pair_id"]))
    with fs.open(path, "wb") as f:
        pq.write_table(pa.Table.from_pylist(queue, schema=REVIEW_SCHEMA), f, row_group_size=64)
    return len(queue)


def _write_exports(config: SynthesisConfig, fs: Any, out: str) -> dict[str, int]:
    """The kept pairs again in the formats other trainers read (TRL parquet, ShareGPT)."""
    exports = posixpath.join(config.output.rstrip("/"), "exports")
    sft_path, sft_columns = posixpath.join(out, "sft.parquet"), ["pair_id", "source", "target", "instruction"]
    return {
        "trl": write_trl_parquet(
            _read_rows(fs, sft_path, sft_columns), posixpath.join(exports, "trl", "train.parquet")
        ),
        "sharegpt": write_sharegpt(
            _read_rows(fs, sft_path, sft_columns), posixpath.join(exports, "sharegpt")
        ),
    }


def _summary(
    config: SynthesisConfig,
    t: _Tally,
    written: dict[str, int],
    resumed_pairs: int,
    pipeline_seconds: float | None,
) -> dict[str, Any]:
    pairs = sum(t.status.values())
    return {
        "pairs": pairs,
        "new_pairs": pairs - resumed_pairs,
        "resumed_pairs": resumed_pairs,
        "kept": t.status["kept"],
        "filtered": t.status["filtered"],
        "quarantined": t.status["quarantined"],
        "quarantine_reasons": dict(t.reasons),
        "routed_to_review": written["review_queue"],
        "candidates": written["candidates"],
        "scores_unparsed": t.unparsed_scores,
        "thresholds": {
            "overall": config.filter.min_overall,
            "semantic_consistency": config.filter.min_semantic_consistency,
        },
        "outputs": written,
        "checks": {
            "flip_consistency": flip_consistency_rate(t.flips) if config.checks.flip_consistency else None,
            "viewpoint_lint": dict(t.lint) if config.checks.viewpoint_lint else None,
        },
        "seconds": None if pipeline_seconds is None else round(pipeline_seconds, 2),
        "stage_seconds": {stage: round(secs, 2) for stage, secs in t.stage_seconds.items()},
        "pairs_per_s": round((pairs - resumed_pairs) / pipeline_seconds, 3) if pipeline_seconds else None,
        "config": redact(json.loads(config.model_dump_json())),  # no credentials in summary.json / report.md
    }


def finalize(
    config: SynthesisConfig, resumed_pairs: int = 0, pipeline_seconds: float | None = None
) -> dict[str, Any]:
    """Write every output and `summary.json` + `report.md`; return the summary."""
    fs, out = open_fs(config.output)
    shards = posixpath.join(config.output.rstrip("/"), "pairs")
    tally = _tally(shards)
    review = select_for_review(tally.priorities, config.routing.review_share)
    written = _write_datasets(config, fs, out, shards, review)
    written.update(_write_exports(config, fs, out))
    summary = _summary(config, tally, written, resumed_pairs, pipeline_seconds)
    summary["report_files"] = write_report(summary, tally.overall, tally.sc, tally.pq, config.output)
    with fs.open(posixpath.join(out, "summary.json"), "w") as f:
        f.write(json.dumps(summary, indent=2) + "\n")
    return summary
