"""The eval job's judge stage: a VLM grades every captioner's instruction on a pair, `num_pass` times,
and (pairwise mode) compares each two captioners' instructions twice, A and B swapped.

One engine call per batch of pairs answers all of a pair's judge requests; `judge_merge` folds them
into one judgment per (pair, captioner) with the pass-level replies kept beside it. A pass whose reply
does not parse adds nothing to the judgment; a judgment with no parsed pass has no verdict and no score,
and is counted as a parse failure in the report, never guessed.
"""

from __future__ import annotations

import json
from collections import Counter
from itertools import combinations
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from editcaption.engines import EngineConfig, EngineRequest, EngineResult, SamplingSettings
from editcaption.prompts.judge import (
    DIMENSIONS,
    JUDGE_PROMPT_VERSION,
    JudgeReply,
    judge_messages,
    pairwise_messages,
    parse_judgment,
    parse_preference,
)
from editcaption.schema import ERROR_TYPES, VERDICTS


class JudgeConfig(BaseModel):
    """The VLM judge (any engine), how often it grades each instruction, and whether it compares pairs."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="The judge's label in the report; None = the engine's model.")
    engine: EngineConfig
    num_pass: int = Field(
        1,
        ge=1,
        description="Grades per instruction; with more than one, the report shows how stable they are.",
    )
    pairwise: bool = Field(
        False,
        description="Also ask which of two captioners' instructions is better, for every two captioners, "
        "once as A-B and once as B-A (position-swap check).",
    )
    use_reference: bool = Field(
        True, description="Show the benchmark's reference instruction when it has one."
    )
    sampling: SamplingSettings = Field(
        default_factory=lambda: SamplingSettings(max_tokens=512),
        description="Greedy by default; give temperature > 0 with num_pass > 1, or the passes repeat.",
    )

    @property
    def label(self) -> str:
        return self.name or self.engine.model


def _captions(row: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return json.loads(row["captions"]) if row["quarantine_reason"] is None else {}


def _plan(row: dict[str, Any], captioners: list[str], pairwise: bool) -> tuple[list[str], list[tuple]]:
    """(captioners with an instruction to judge, the captioner pairs to compare), in a fixed order."""
    captions = _captions(row)
    judged = [m for m in captioners if (captions.get(m) or {}).get("instruction")]
    return judged, list(combinations(judged, 2)) if pairwise else []


def judge_expand(row: dict[str, Any], captioners: list[str], cfg: JudgeConfig) -> list[EngineRequest]:
    """Per judged captioner `num_pass` grading requests, then per compared pair A-B and B-A."""
    judged, compared = _plan(row, captioners, cfg.pairwise)
    captions = _captions(row)
    reference = row.get("reference_instruction") if cfg.use_reference else None
    images = [row["source"], row["target"]]
    requests = []
    for model in judged:
        for p in range(cfg.num_pass):
            seed = None if cfg.sampling.seed is None else cfg.sampling.seed + p
            requests.append(
                EngineRequest(
                    request_id=f"{row['pair_id']}:{model}:judge{p}",
                    images=images,
                    messages=judge_messages(captions[model]["instruction"], reference),
                    sampling=cfg.sampling.model_copy(update={"seed": seed}),
                )
            )
    for a, b in compared:
        for first, second, tag in ((a, b, "ab"), (b, a, "ba")):
            requests.append(
                EngineRequest(
                    request_id=f"{row['pair_id']}:{a}:{b}:{tag}",
                    images=images,
                    messages=pairwise_messages(
                        captions[first]["instruction"], captions[second]["instruction"], reference
                    ),
                    sampling=cfg.sampling,
                )
            )
    return requests


def judge_merge(
    row: dict[str, Any], results: list[EngineResult], captioners: list[str], cfg: JudgeConfig
) -> dict[str, Any]:
    """The row plus `judgments`, `judge_passes` and `comparisons` (JSON lists), in `judge_expand` order."""
    judged, compared = _plan(row, captioners, cfg.pairwise)
    captions = _captions(row)
    answers = iter(results)
    base = {"pair_id": row["pair_id"], "benchmark": row["benchmark"], "judge": cfg.label}
    judgments, passes, comparisons = [], [], []
    for model in judged:
        replies = []
        for p in range(cfg.num_pass):
            result = next(answers)
            reply = parse_judgment(result) if result.error is None else None
            replies.append(reply)
            passes.append(
                {
                    **base,
                    "model": model,
                    "pass": p,
                    "text": result.text,
                    "error": "engine_error" if reply is None else reply.error,
                    "engine_error": result.error,
                    "verdict": None if reply is None else reply.verdict,
                    "overall": None if reply is None else reply.overall,
                }
            )
        parsed = [r for r in replies if r is not None and r.error is None]
        judgments.append(
            {
                **base,
                "model": model,
                "instruction": captions[model]["instruction"],
                "category": row.get("category"),
                "passes": cfg.num_pass,
                "parsed_passes": len(parsed),
                "prompt_version": JUDGE_PROMPT_VERSION,
                **aggregate_passes(parsed),
            }
        )
    for a, b in compared:
        ab, ba = (next(answers) for _ in range(2))
        prefs = [parse_preference(r) if r.error is None else None for r in (ab, ba)]
        ab_pref, ba_pref = (None if p is None else p.preferred for p in prefs)
        comparisons.append(
            {
                **base,
                "model_a": a,
                "model_b": b,
                "ab": ab_pref,
                "ba": ba_pref,
                "ab_error": ab.error or (prefs[0].error if prefs[0] else None),
                "ba_error": ba.error or (prefs[1].error if prefs[1] else None),
                "outcome": swap_outcome(ab_pref, ba_pref),
            }
        )
    return {
        **row,
        "judgments": json.dumps(judgments),
        "judge_passes": json.dumps(passes),
        "comparisons": json.dumps(comparisons),
    }


def aggregate_passes(replies: list[JudgeReply]) -> dict[str, Any]:
    """One judgment from the parsed passes of one instruction.

    Overall and each dimension: the mean over passes. Verdict: the most frequent; a tie goes to the
    more severe verdict, so disagreeing passes never make an instruction look better. Error types:
    those named by the passes that gave that verdict. No parsed pass: no verdict and no scores.
    """
    if not replies:
        return {"verdict": None, "overall": None, "error_types": [], "scores": dict.fromkeys(DIMENSIONS)}
    counts = Counter(r.verdict for r in replies)
    verdict = max(counts, key=lambda v: (counts[v], VERDICTS.index(v)))
    named = {t for r in replies if r.verdict == verdict for t in r.error_types}
    return {
        "verdict": verdict,
        "overall": sum(r.overall for r in replies) / len(replies),
        "error_types": [t for t in ERROR_TYPES if t in named],
        "scores": {d: sum(r.scores[d] for r in replies) / len(replies) for d in DIMENSIONS},
    }


def swap_outcome(ab: str | None, ba: str | None) -> str | None:
    """Who won a comparison asked both ways: "A" (the first model), "B", "tie", or "inconsistent" when
    the answer depends on the order shown; None when a reply did not parse."""
    if ab is None or ba is None:
        return None
    if (ab, ba) in (("A", "B"), ("B", "A"), ("tie", "tie")):
        return ab
    return "inconsistent"
