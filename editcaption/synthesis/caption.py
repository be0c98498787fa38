"""The caption job: read pairs → quarantine bad ones → write `n` instruction candidates per pair.

Every input pair ends as candidates or as a quarantined row with its reason, and the summary's
counts add up. Scoring, filtering and routing to humans build on this job's candidates.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections import Counter
from typing import Any

from pydantic import Field

from editcaption.config import JobInputs
from editcaption.engines import EngineConfig, EngineResult, SamplingSettings, make_engine
from editcaption.engines.families import warn_if_reasoning_is_cut
from editcaption.prompts.instruction import PROMPT_VERSION, caption_expand, make_candidate
from editcaption.schema import Candidate, QuarantinedPair


class CaptionJobConfig(JobInputs):
    """The pairs to read (see `JobInputs`), which engine writes the instructions, how many per pair."""

    output: str = Field("runs/caption", description="Folder (or URI) the Parquet outputs go to.")
    candidates_per_pair: int = Field(1, ge=1, description="Instructions written per pair.")
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    engine: EngineConfig


def caption_requests(pair: dict[str, Any], n: int, sampling: SamplingSettings) -> list[dict[str, Any]]:
    """`n` request rows for one good pair, carrying its `pair_id`."""
    return [{**r.to_row(), "pair_id": pair["pair_id"]} for r in caption_expand(pair, n, sampling)]


def to_candidate(row: dict[str, Any], model: str, reasoning_in_prompt: bool = False) -> dict[str, Any]:
    return make_candidate(row["pair_id"], EngineResult.from_row(row), model, reasoning_in_prompt)


def run_caption_job(config: CaptionJobConfig) -> dict[str, Any]:
    """Run the job to completion and return (and write) its summary."""
    import pyarrow.parquet as pq

    from editcaption.io import (
        read_pairs,
        split_quarantine,
        to_quarantined_records,
        validate_pairs,
        write_parquet,
    )
    from editcaption.io.fs import open_fs
    from editcaption.ray_setup import init_ray

    init_ray(config.ray_address)
    warn_if_reasoning_is_cut(config.engine, config.sampling, "engine")
    started = time.time()
    fs, out = open_fs(config.output)
    fs.makedirs(out, exist_ok=True)
    quarantine_dir, candidates_dir = posixpath.join(out, "quarantine"), posixpath.join(out, "candidates")

    pairs = validate_pairs(read_pairs(config.input, format=config.format, limit=config.limit), config.images)
    pairs = pairs.materialize()  # read and validate once; both outputs below come from it
    good, quarantined = split_quarantine(pairs)
    quarantined = quarantined.map(lambda row: to_quarantined_records([row])[0].to_row(), num_cpus=0.25)
    write_parquet(
        quarantined, config.output.rstrip("/") + "/quarantine", schema=QuarantinedPair.arrow_schema()
    )

    n, sampling, model = config.candidates_per_pair, config.sampling, config.engine.model
    requests = good.flat_map(lambda pair: caption_requests(pair, n, sampling), num_cpus=0.25)
    replies = make_engine(config.engine).apply(requests)
    in_prompt = config.engine.model_family().reasoning_in_prompt
    candidates = replies.map(lambda row: to_candidate(row, model, in_prompt), num_cpus=0.25)
    write_parquet(candidates, config.output.rstrip("/") + "/candidates", schema=Candidate.arrow_schema())

    # The summary reads back what was written: its counts are the outputs', not the plan's.
    table = pq.read_table(candidates_dir, columns=["parsed", "error", "parse_error"], filesystem=fs)
    reasons = Counter(pq.read_table(quarantine_dir, columns=["reason"], filesystem=fs)["reason"].to_pylist())
    summary = {
        "pairs": pairs.count(),
        "pairs_captioned": good.count(),
        "pairs_quarantined": sum(reasons.values()),
        "quarantine_reasons": dict(reasons),
        "candidates": table.num_rows,
        "candidates_parsed": sum(table["parsed"].to_pylist()),
        "candidates_truncated": table["parse_error"].to_pylist().count("truncated"),
        "engine_errors": table.num_rows - table["error"].null_count,
        "engine": config.engine.backend,
        "model": model,
        "prompt_version": PROMPT_VERSION,
        "seconds": round(time.time() - started, 2),
    }
    with fs.open(posixpath.join(out, "summary.json"), "w") as f:
        f.write(json.dumps(summary, indent=2) + "\n")
    return summary
