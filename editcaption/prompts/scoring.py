"""How a pair's candidates are scored with EditScore: its settings (`EditScoreConfig`), the requests
(`score_expand`), and the replies folded into one `Score` per candidate (`score_merge`,
`aggregate_editscore`). Synthesis and serving both score through here.

Each pass asks the scorer two questions (semantic consistency, perceptual quality); the replies are
parsed by `editcaption.prompts.editscore` and only passes whose two replies both parsed count. Every
reply is kept verbatim, with the reason it did not parse, so unparsed ones can be inspected and
re-parsed later.

The defaults are EditScore's own protocol, as its package (`editscore` 0.2) asks its checkpoints: the
upstream prompts, sampling at temperature 0.7, top_p 0.9, top_k 20 with 512 new tokens, and the edited
image resized to the source image's size before both questions (its evaluation scripts resize the
edited image to the source's width and height with Pillow's default filter).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from pydantic import BaseModel, Field

from editcaption.engines.base import EngineRequest, EngineResult, SamplingSettings
from editcaption.images import ImagePolicy, ImageRejected, decode_image, encode_png
from editcaption.prompts.answer import ReplyLike
from editcaption.prompts.editscore import (
    PQ_FIELDS,
    SC_FIELDS,
    EditScorePrompt,
    editscore_messages,
    parse_score_reply,
)
from editcaption.schema import Score


class EditScoreConfig(BaseModel, extra="forbid"):
    """How the EditScore model is asked; the defaults are the upstream protocol (`editscore` 0.2)."""

    prompt: EditScorePrompt = Field(
        "upstream",
        description="`upstream`: the prompts EditScore's checkpoints were trained with, read from the "
        "`editscore` package at run time; `editcaption`: our own wording (the miniature world's scorer "
        "was trained on it).",
    )
    score_range: int = Field(25, ge=1, description="Top of the 0-N scale the prompts ask for.")
    num_pass: int = Field(1, ge=1, description="Passes per candidate; their scores are averaged.")
    temperature: float = Field(
        0.7,
        ge=0.0,
        description="Sampling temperature (upstream: 0.7); 0 is greedy, and then every pass repeats the first.",
    )
    top_p: float = Field(0.9, gt=0.0, le=1.0, description="Nucleus sampling (upstream: 0.9).")
    top_k: int | None = Field(20, ge=1, description="Top-k sampling (upstream: 20); None: no limit.")
    max_tokens: int = Field(512, ge=1, description="Reply budget (upstream: 512): a reasoning plus the JSON.")
    resize_to_source: bool = Field(
        True,
        description="Resize the edited image to the source image's size before scoring, as EditScore's "
        "evaluation does (its checkpoints saw equal-sized pairs).",
    )

    def sampling(self, scoring_pass: int) -> SamplingSettings:
        """Sampling of one pass; passes differ by seed."""
        return SamplingSettings(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            seed=scoring_pass,
        )


def edited_for_scoring(source: bytes, edited: bytes) -> bytes:
    """The edited image at the source image's size (EditScore's rule); unchanged when they match.

    Both are decoded upright (EXIF applied), so sizes compare as seen; Pillow's default filter for RGB
    (bicubic) is the one EditScore's scripts use. Bytes that do not decode are returned as they are, so
    the engine reports the error on that request instead of the batch failing.
    """
    policy = ImagePolicy(reject_identical=False)
    try:
        src = decode_image(source, policy, role="source")
        out = decode_image(edited, policy, role="target")
    except ImageRejected:  # sent as is: the engine answers that request with the decoding error
        return edited
    if out.size == src.size:
        return edited
    return encode_png(out.resize(src.size))


def score_rank(score: dict[str, Any] | None, votes: int = 0) -> tuple[bool, float, float, int]:
    """Sort key of a candidate's score row, higher is better: scored before unscored (no row, or no
    parsed reply), then overall, ties broken by semantic consistency, then by `votes` (how many of the
    pair's candidates wrote the same instruction, `instruction_votes`)."""
    if score is None or score.get("overall") is None:
        return (False, 0.0, 0.0, votes)
    return (True, score["overall"], score["semantic_consistency"] or 0.0, votes)


def instruction_votes(candidates: list[dict[str, Any]]) -> dict[str, int]:
    """candidate_id → how many of the candidates wrote the same instruction (case, spacing and the final
    full stop ignored). A scorer that cannot tell two readings apart scores them alike; the reading the
    annotator sampled more often is then the likelier one (self-consistency), where the first in file
    order is a coin toss."""
    texts = {c["candidate_id"]: _normalized(c.get("instruction")) for c in candidates}
    counts = Counter(t for t in texts.values() if t)
    return {cid: counts[t] if t else 0 for cid, t in texts.items()}


def _normalized(instruction: str | None) -> str:
    return " ".join((instruction or "").lower().split()).rstrip(".")


def best_score(scores: list[dict[str, Any]], votes: dict[str, int] | None = None) -> dict[str, Any] | None:
    """The best candidate's score row by `score_rank` (with `votes` from `instruction_votes` when given);
    None when no candidate's replies parsed. The one rule synthesis's filter, Serve's `instruction` and
    review import's candidate order all use."""
    votes = votes or {}
    scored = [s for s in scores if s.get("overall") is not None]
    return max(scored, key=lambda s: score_rank(s, votes.get(s["candidate_id"], 0)), default=None)


def _parsed(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in row["candidates"] if c["parsed"]]


def score_expand(
    row: dict[str, Any], cfg: EditScoreConfig, image_label: str | None = None
) -> list[EngineRequest]:
    """Per pass: one semantic-consistency request per parsed candidate, then one perceptual-quality
    request for the pair (PQ looks at the edited image only, so candidates share it). The prompts are
    `cfg.prompt`'s variant; `image_label` is the scorer family's text before each image, if any."""
    candidates = _parsed(row) if row["quarantine_reason"] is None else []
    if not candidates:
        return []
    edited = edited_for_scoring(row["source"], row["target"]) if cfg.resize_to_source else row["target"]
    requests = []
    for p in range(cfg.num_pass):
        for c in candidates:
            requests.append(
                EngineRequest(
                    request_id=f"{c['candidate_id']}:sc{p}",
                    images=[row["source"], edited],
                    messages=editscore_messages(
                        "sc", cfg.prompt, cfg.score_range, c["instruction"], image_label
                    ),
                    sampling=cfg.sampling(p),
                )
            )
        requests.append(
            EngineRequest(
                request_id=f"{row['pair_id']}:pq{p}",
                images=[edited],
                messages=editscore_messages("pq", cfg.prompt, cfg.score_range, image_label=image_label),
                sampling=cfg.sampling(p),
            )
        )
    return requests


def score_merge(
    row: dict[str, Any],
    results: list[EngineResult],
    cfg: EditScoreConfig,
    scorer: str,
    reasoning_in_prompt: bool = False,
) -> dict[str, Any]:
    candidates = _parsed(row) if results else []
    stride = len(candidates) + 1
    scores = []
    for k, c in enumerate(candidates):
        sc = [_reply(results[p * stride + k]) for p in range(cfg.num_pass)]
        pq = [_reply(results[p * stride + stride - 1]) for p in range(cfg.num_pass)]
        score = aggregate_editscore(
            row["pair_id"], c["candidate_id"], scorer, sc, pq, cfg.score_range, reasoning_in_prompt
        )
        scores.append(score.to_row())
    return {**row, "scores": scores}


def _reply(result: EngineResult) -> EngineResult | None:
    return result if result.error is None else None


def aggregate_editscore(
    pair_id: str,
    candidate_id: str,
    scorer: str,
    sc_replies: list[str | ReplyLike | None],
    pq_replies: list[str | ReplyLike | None],
    score_range: int,
    reasoning_in_prompt: bool = False,
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
    errors: list[str | None] = []
    for sc_reply, pq_reply in zip(sc_replies, pq_replies, strict=True):
        sc = parse_score_reply(sc_reply, score_range, SC_FIELDS, reasoning_in_prompt)
        pq = parse_score_reply(pq_reply, score_range, PQ_FIELDS, reasoning_in_prompt)
        errors += [_error(sc_reply, sc.error), _error(pq_reply, pq.error)]
        if sc.scores is not None and pq.scores is not None:
            sc_values.append(min(sc.scores) * scale)
            pq_values.append(min(pq.scores) * scale)
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
        raw_replies=[_text(r) for pair in zip(sc_replies, pq_replies, strict=True) for r in pair],
        reply_errors=errors,
    )


def _text(reply: str | ReplyLike | None) -> str:
    if reply is None or isinstance(reply, str):
        return reply or ""
    return reply.text or ""


def _error(reply: str | ReplyLike | None, error: str | None) -> str | None:
    """The parse error of a reply; an engine failure (no reply at all) is `engine_error`."""
    return "engine_error" if reply is None else error


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
