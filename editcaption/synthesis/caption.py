"""The caption job: read pairs → quarantine bad ones → write `n` instruction candidates per pair.

Every input pair ends as candidates or as a quarantined row with its reason, and the summary's
counts add up. Scoring, filtering and routing to humans build on this job's candidates.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from editcaption.engines import EngineConfig, EngineRequest, SamplingSettings, make_engine
from editcaption.images import ImagePolicy
from editcaption.prompts.instruction import PROMPT_VERSION, instruction_messages, parse_instruction
from editcaption.schema import Candidate


class CaptionJobConfig(BaseModel):
    """What to read, which engine writes the instructions, and where the results go."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(description="Pairs to caption: a local path or object-store URI (see `read_pairs`).")
    format: str = Field("auto", description="auto, folder, manifest, hqedit, bytemorph or webdataset.")
    output: str = Field("runs/caption", description="Folder (or URI) the Parquet outputs go to.")
    limit: int | None = Field(None, ge=1, description="Read at most this many pairs.")
    candidates_per_pair: int = Field(1, ge=1, description="Instructions written per pair.")
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    images: ImagePolicy = Field(default_factory=ImagePolicy)
    engine: EngineConfig
    ray_address: str | None = Field(None, description="Join this Ray cluster instead of starting one.")


def caption_requests(pair: dict[str, Any], n: int, sampling: SamplingSettings) -> list[dict[str, Any]]:
    """`n` requests for one pair; with sampling on, each gets its own seed so candidates differ."""
    rows = []
    for i in range(n):
        seed = sampling.seed if sampling.temperature == 0 else (sampling.seed or 0) + i
        request = EngineRequest(
            request_id=f"{pair['pair_id']}:{i}",
            images=[pair["source"], pair["target"]],
            messages=instruction_messages(),
            sampling=sampling.model_copy(update={"seed": seed}),
        )
        rows.append({**request.to_row(), "pair_id": pair["pair_id"]})
    return rows


def to_candidate(row: dict[str, Any], model: str) -> dict[str, Any]:
    instruction = parse_instruction(row["text"])
    return Candidate(
        pair_id=row["pair_id"],
        candidate_id=row["request_id"],
        instruction=instruction,
        raw_text=row["text"] or "",
        model=model,
        prompt_version=PROMPT_VERSION,
        parsed=instruction is not None,
        error=row["error"],
    ).to_row()


def run_caption_job(config: CaptionJobConfig) -> dict[str, Any]:
    """Run the job to completion and return (and write) its summary."""
    import ray.data

    from editcaption.io import read_pairs, split_quarantine, validate_pairs, write_parquet
    from editcaption.ray_setup import init_ray

    init_ray(config.ray_address)
    started = time.time()
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)

    pairs = validate_pairs(read_pairs(config.input, format=config.format, limit=config.limit), config.images)
    pairs = pairs.materialize()  # read and validate once; both outputs below come from it
    good, quarantined = split_quarantine(pairs)
    write_parquet(quarantined, out / "quarantine")

    n, sampling, model = config.candidates_per_pair, config.sampling, config.engine.model
    requests = good.flat_map(lambda pair: caption_requests(pair, n, sampling), num_cpus=0.25)
    replies = make_engine(config.engine).apply(requests)
    candidates = replies.map(lambda row: to_candidate(row, model), num_cpus=0.25)
    write_parquet(candidates, out / "candidates")

    table = ray.data.read_parquet(str(out / "candidates")).select_columns(["parsed", "error"]).to_pandas()
    reasons: dict[str, int] = {}
    for reason in ray.data.read_parquet(str(out / "quarantine")).to_pandas()["reason"]:
        reasons[reason] = reasons.get(reason, 0) + 1
    summary = {
        "pairs": pairs.count(),
        "pairs_captioned": good.count(),
        "pairs_quarantined": sum(reasons.values()),
        "quarantine_reasons": reasons,
        "candidates": len(table),
        "candidates_parsed": int(table["parsed"].sum()),
        "engine_errors": int(table["error"].notna().sum()),
        "engine": config.engine.backend,
        "model": model,
        "prompt_version": PROMPT_VERSION,
        "seconds": round(time.time() - started, 2),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
