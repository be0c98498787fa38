"""Stage 1 synthesis: read → caption → EditScore → filter → route → write, as one streaming pipeline.

A row is a pair from start to finish. The annotator and the scorer run as grouped engine stages
(`Engine.apply_grouped`): a pair goes in, its `n` candidates (then all their scoring passes) are
generated inside one actor call, and the pair comes out whole, so nothing has to be regrouped after a
shuffle and memory stays flat however large the input. Finished pairs are committed in atomic shards
(`shards.py`); a rerun skips committed pairs. The final step reads the committed shards once and
writes the datasets people use: SFT records, exports, the review queue, the quarantine, the report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from editcaption.engines import EngineResult
from editcaption.engines.families import warn_if_reasoning_is_cut
from editcaption.prompts.instruction import caption_expand, make_candidate
from editcaption.prompts.scoring import best_score, instruction_votes, score_expand, score_merge
from editcaption.schema import pair_table
from editcaption.synthesis.config import ChecksConfig, FilterConfig, SynthesisConfig
from editcaption.synthesis.route import RoutingConfig, review_priority, wording_disagreement

# ---------------------------------------------------------------- caption stage


def caption_merge(
    row: dict[str, Any], results: list[EngineResult], model: str, reasoning_in_prompt: bool = False
) -> dict[str, Any]:
    candidates = [make_candidate(row["pair_id"], result, model, reasoning_in_prompt) for result in results]
    return {**row, "candidates": candidates}


# ---------------------------------------------------------------- decide


def decide(row: dict[str, Any], filt: FilterConfig, routing: RoutingConfig) -> dict[str, Any]:
    """Status (kept / filtered / quarantined), the best candidate, why, and its review priority."""
    out = {
        **row,
        "status": "quarantined",
        "best_candidate_id": None,
        "best_instruction": None,
        "best_overall": None,
        "best_semantic_consistency": None,
        "filter_reason": None,
        "review_priority": None,
        "review_reasons": "[]",
    }
    if row["quarantine_reason"] is not None:
        return out
    candidates = {c["candidate_id"]: c for c in row["candidates"]}
    scores = row["scores"]
    best = best_score(scores, instruction_votes(row["candidates"]))
    if best is None:
        reason = "no parsed candidate" if not scores else "no candidate's EditScore replies parsed"
        out.update(status="filtered", filter_reason=reason)
    else:
        out.update(
            best_candidate_id=best["candidate_id"],
            best_instruction=candidates[best["candidate_id"]]["instruction"],
            best_overall=best["overall"],
            best_semantic_consistency=best["semantic_consistency"],
        )
        failed = []
        if best["overall"] < filt.min_overall:
            failed.append(f"overall {best['overall']:.2f} < {filt.min_overall}")
        if best["semantic_consistency"] < filt.min_semantic_consistency:
            failed.append(f"SC {best['semantic_consistency']:.2f} < {filt.min_semantic_consistency}")
        if filt.max_candidate_disagreement is not None:
            disagreement = wording_disagreement([c["instruction"] for c in candidates.values()])
            if disagreement >= filt.max_candidate_disagreement:
                failed.append(f"candidates disagree {disagreement:.2f} >= {filt.max_candidate_disagreement}")
        out.update(status="filtered" if failed else "kept", filter_reason="; ".join(failed) or None)
    by_candidate = {s["candidate_id"]: s["overall"] for s in scores}
    for cid, c in candidates.items():
        c["outcome"] = _outcome(c, by_candidate.get(cid), cid == out["best_candidate_id"], out["status"])
    out["candidates"] = list(candidates.values())
    priority, reasons = review_priority(
        out["best_overall"],
        filt.min_overall,
        [by_candidate.get(cid) for cid in candidates],
        [c["instruction"] for c in candidates.values()],
        routing,
    )
    out.update(review_priority=priority, review_reasons=json.dumps(reasons))
    return out


def apply_check_flags(row: dict[str, Any], checks: ChecksConfig) -> dict[str, Any]:
    """Fold the checks' findings into the review ranking: flip-inconsistent pairs go to review first,
    lint findings raise the priority. Findings are kept on the row for the report."""
    findings: list[str] = []
    if checks.viewpoint_lint and row["best_instruction"]:
        from editcaption.checks.viewpoint import lint_viewpoint

        findings = sorted({issue.kind for issue in lint_viewpoint(row["best_instruction"], checks.lang)})
    out = {**row, "lint_findings": json.dumps(findings)}
    out.setdefault("flip_verdict", None)
    out.setdefault("flip_reason", None)
    out.setdefault("flip_details", None)
    if row["review_priority"] is None:
        return out
    reasons = json.loads(row["review_reasons"])
    priority = row["review_priority"] + checks.lint_review_boost * len(findings)
    reasons += [f"viewpoint_lint:{kind}" for kind in findings]
    if out["flip_verdict"] == "inconsistent":
        priority += checks.flip_review_boost
        reasons.append("flip_inconsistent")
    return {**out, "review_priority": priority, "review_reasons": json.dumps(reasons)}


def _outcome(candidate: dict[str, Any], overall: float | None, best: bool, status: str) -> str:
    """Why a candidate was or was not kept, so no candidate is dropped without a recorded reason."""
    if candidate["error"]:
        return "engine_error"
    if candidate.get("parse_error") == "truncated":
        return "truncated"
    if not candidate["parsed"]:
        return "unparsed"
    if overall is None:
        return "unscored"
    if best:
        return "kept" if status == "kept" else "below_threshold"
    return "not_best"


# ---------------------------------------------------------------- the job


def map_pairs(batch: pa.Table, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> pa.Table:
    """`fn` on every pair row of a block, the rows going out as a `pair_table`: Ray's row-wise `map`
    would infer candidates' and scores' types block by block, and unlike blocks fail to concatenate."""
    return pair_table([fn(row) for row in batch.to_pylist()])


def run_synthesis(config: SynthesisConfig) -> dict[str, Any]:
    """Run (or resume) the job into `config.output` and return its summary."""
    import functools

    from editcaption.engines import GroupedStep, make_engine
    from editcaption.io import read_pairs, validate_pairs
    from editcaption.ray_setup import init_ray
    from editcaption.synthesis.finalize import finalize
    from editcaption.synthesis.shards import AtomicShardSink, done_pair_ids

    shards_uri = config.output.rstrip("/") + "/pairs"
    done = done_pair_ids(shards_uri)  # first: a folder of another shard format is refused before Ray starts
    init_ray(config.ray_address)
    warn_if_reasoning_is_cut(config.annotator, config.sampling, "annotator")
    started = time.time()

    pairs = read_pairs(config.input, format=config.format, limit=config.limit)
    if done:
        pairs = pairs.filter(lambda row: row["pair_id"] not in done)
    pairs = validate_pairs(pairs, config.images)

    annotator = make_engine(config.annotator)
    batch = config.pairs_per_batch or annotator.rows_per_batch(config.candidates_per_pair)
    annotator_family, scorer_family = config.annotator.model_family(), config.scorer.model_family()
    caption = GroupedStep(
        expand=functools.partial(caption_expand, n=config.candidates_per_pair, sampling=config.sampling),
        merge=functools.partial(
            caption_merge,
            model=config.annotator.model,
            reasoning_in_prompt=annotator_family.reasoning_in_prompt,
        ),
        seconds_column="caption_seconds",
    )
    score = GroupedStep(
        expand=functools.partial(score_expand, cfg=config.editscore, image_label=scorer_family.image_label),
        merge=functools.partial(
            score_merge,
            cfg=config.editscore,
            scorer=config.scorer.model,
            reasoning_in_prompt=scorer_family.reasoning_in_prompt,
        ),
        seconds_column="score_seconds",
    )
    if config.scorer == config.annotator:  # one engine both captions and scores: one copy of the model
        scored = annotator.apply_steps(pairs, [caption, score], batch, config.annotator.replicas)
    else:
        captioned = annotator.apply_steps(pairs, [caption], batch, config.annotator.replicas)
        scored = make_engine(config.scorer).apply_steps(captioned, [score], batch, config.scorer.replicas)
    decide_pair = functools.partial(decide, filt=config.filter, routing=config.routing)
    decided = scored.map_batches(
        functools.partial(map_pairs, fn=decide_pair), batch_format="pyarrow", num_cpus=0.25
    )
    if config.checks.flip_consistency:
        from editcaption.checks.flip import FlipConsistencyCheck

        decided = FlipConsistencyCheck(
            make_engine(config.annotator),
            sampling=config.sampling,
            lang=config.checks.lang,
            batch_size=batch,
            replicas=config.annotator.replicas,
        ).apply(decided)
    flag_pair = functools.partial(apply_check_flags, checks=config.checks)
    decided = decided.map_batches(
        functools.partial(map_pairs, fn=flag_pair), batch_format="pyarrow", num_cpus=0.25
    )
    decided = decided.repartition(target_num_rows_per_block=batch)
    decided.write_datasink(AtomicShardSink(shards_uri))
    return finalize(config, resumed_pairs=len(done), pipeline_seconds=time.time() - started)
