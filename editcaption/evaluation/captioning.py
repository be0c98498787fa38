"""The eval job's caption stage: one captioner writes an instruction per pair, and the failure-mode
checks measure it (flip consistency, viewpoint lint, attribute coverage against the reference).

A pair stays one row: each captioner's stage adds its entry to the row's `captions` JSON (model name
→ instruction and check results). With flip consistency on, the mirrored pair is captioned in the same
engine call as the pair itself, so the check needs no second engine; the price is one more request
per pair, also for pairs whose instruction turns out to have no direction to check.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from editcaption.checks.attributes import attribute_coverage
from editcaption.checks.config import ChecksConfig
from editcaption.checks.flip import flip_applicable, flip_verdict, mirror_pair
from editcaption.checks.viewpoint import lint_viewpoint
from editcaption.engines import EngineConfig, EngineRequest, EngineResult, SamplingSettings
from editcaption.images import ImageRejected
from editcaption.prompts.instruction import instruction_request, parse_instruction


class CaptionerConfig(BaseModel):
    """A captioner under evaluation: any engine (a checkpoint on vLLM, an API model, the served endpoint)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The model's label in every table, e.g. qwen3-vl-8b or ours-dpo.")
    engine: EngineConfig
    sampling: SamplingSettings = Field(
        default_factory=lambda: SamplingSettings(max_tokens=160),
        description="Greedy by default, so a rerun writes the same instructions.",
    )


class EvalChecksConfig(ChecksConfig):
    """The shared checks (`ChecksConfig`), measured on every captioner's instructions, plus attribute
    coverage, which needs the reference instruction only a benchmark has."""

    attribute_coverage: bool = Field(
        True,
        description="Attribute coverage against the benchmark's reference instruction, where it has one.",
    )


def caption_expand(
    row: dict[str, Any], name: str, sampling: SamplingSettings, flip: bool
) -> list[EngineRequest]:
    """The caption request for a good pair (and its mirrored twin when flip is on); none if quarantined."""
    if row["quarantine_reason"] is not None:
        return []
    requests = [instruction_request(f"{row['pair_id']}:{name}", row["source"], row["target"], sampling)]
    if flip:
        try:
            mirrored = mirror_pair(bytes(row["source"]), bytes(row["target"]))
        except ImageRejected:
            return requests
        requests.append(instruction_request(f"{row['pair_id']}:{name}:mirror", *mirrored, sampling))
    return requests


def caption_merge(
    row: dict[str, Any], results: list[EngineResult], name: str, checks: EvalChecksConfig
) -> dict[str, Any]:
    """The row with `captions[name]` set: the instruction (None when unparsed) and its check results."""
    captions = json.loads(row["captions"])
    if row["quarantine_reason"] is not None:
        return row
    result = results[0]
    instruction = parse_instruction(result) if result.error is None else None
    entry: dict[str, Any] = {
        "instruction": instruction,
        "raw_text": result.text or "",
        "error": result.error,
        "flip_verdict": None,
        "flip_reason": None,
        "mirrored_instruction": None,
        "lint": None,
        "attribute_score": None,
        "attributes_missing": None,
        "attributes_wrong": None,
    }
    reference = row.get("reference_instruction")
    if checks.flip_consistency:
        entry.update(_flip(instruction, reference, results[1:], checks.lang))
    if instruction is not None and checks.viewpoint_lint:
        entry["lint"] = sorted({issue.kind for issue in lint_viewpoint(instruction, checks.lang)})
    if instruction is not None and reference and checks.attribute_coverage:
        coverage = attribute_coverage(instruction, reference, checks.lang)
        entry.update(
            attribute_score=coverage.score,
            attributes_missing=sorted(coverage.missing),
            attributes_wrong=sorted(coverage.wrong),
        )
    captions[name] = entry
    return {**row, "captions": json.dumps(captions)}


def _flip(
    instruction: str | None, reference: str | None, mirrored: list[EngineResult], lang: str
) -> dict[str, Any]:
    """The flip verdict as `checks.flip` gives it, from the mirrored pair's reply already in hand."""
    applicable, reason = flip_applicable(instruction, reference, lang)
    if not applicable:
        return {"flip_verdict": "not_applicable", "flip_reason": reason}
    if not mirrored:
        return {"flip_verdict": "not_applicable", "flip_reason": "the pair's images could not be mirrored"}
    if mirrored[0].error is not None:
        return {
            "flip_verdict": "not_applicable",
            "flip_reason": f"engine error on the mirrored pair: {mirrored[0].error}",
        }
    text = parse_instruction(mirrored[0])
    verdict, reason = flip_verdict(instruction, text, lang)
    return {"flip_verdict": verdict, "flip_reason": reason, "mirrored_instruction": text}
