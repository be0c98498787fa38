"""EditScore settings and the aggregation of its replies into one `Score` per candidate.

Each pass asks the scorer two questions (semantic consistency, perceptual quality); the replies are
parsed by `editcaption.prompts.editscore` and only passes whose two replies both parsed count. Every
reply is kept verbatim so unparsed ones can be inspected and re-parsed later.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field

from editcaption.prompts.editscore import PQ_FIELDS, SC_FIELDS, parse_score_reply
from editcaption.schema import Score


class EditScoreConfig(BaseModel, extra="forbid"):
    """How the EditScore model is asked; the defaults follow the protocol's single greedy pass."""

    score_range: int = Field(25, ge=1, description="Top of the 0-N scale the prompts ask for.")
    num_pass: int = Field(1, ge=1, description="Passes per candidate; their scores are averaged.")
    temperature: float = Field(
        0.0,
        ge=0.0,
        description="Sampling temperature; use > 0 with num_pass > 1, or every pass repeats the first.",
    )
    max_tokens: int = Field(256, ge=1, description="Reply budget: a short reasoning plus the JSON object.")


def aggregate_editscore(
    pair_id: str,
    candidate_id: str,
    scorer: str,
    sc_replies: list[str | None],
    pq_replies: list[str | None],
    score_range: int,
) -> Score:
    """One `Score` from `num_pass` pairs of replies (pass p: `sc_replies[p]`, `pq_replies[p]`).

    Per counted pass: SC = min(edit success, over-editing) and PQ = min(naturalness, artifacts), both
    rescaled to 0-10, and overall = sqrt(SC * PQ). The reported SC, PQ and overall are means over the
    counted passes; a pass with either reply unparsed is left out whole, so the three means always
    cover the same passes.

    Overall is averaged per pass rather than taken as sqrt(mean SC * mean PQ): the per-pass mean has
    the same expected value whatever `num_pass` is and however many passes parsed, so one filtering
    threshold means the same for every candidate and every config. sqrt of the means is biased upward
    as passes are added (by Jensen's inequality), so a candidate scored with more passes would look
    better than the same candidate scored once. As a consequence `overall` may differ slightly from
    sqrt(`semantic_consistency` * `perceptual_quality`) when sampled passes disagree.
    """
    if len(sc_replies) != len(pq_replies):
        raise ValueError(f"{len(sc_replies)} SC replies but {len(pq_replies)} PQ replies")
    scale = 10.0 / score_range
    sc_values: list[float] = []
    pq_values: list[float] = []
    for sc_text, pq_text in zip(sc_replies, pq_replies, strict=True):
        sc = parse_score_reply(sc_text, score_range, SC_FIELDS).scores
        pq = parse_score_reply(pq_text, score_range, PQ_FIELDS).scores
        if sc is not None and pq is not None:
            sc_values.append(min(sc) * scale)
            pq_values.append(min(pq) * scale)
    overalls = [math.sqrt(s * q) for s, q in zip(sc_values, pq_values, strict=True)]
    return Score(
        pair_id=pair_id,
        candidate_id=candidate_id,
        scorer=scorer,
        semantic_consistency=_mean(sc_values),
        perceptual_quality=_mean(pq_values),
        overall=_mean(overalls),
        num_pass=len(sc_replies),
        num_parsed=len(sc_values),
        raw_replies=[text or "" for pair in zip(sc_replies, pq_replies, strict=True) for text in pair],
    )


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
