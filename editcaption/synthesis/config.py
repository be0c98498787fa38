"""The synthesis job's configs: the whole Stage 1 job (`SynthesisConfig`) and its filter and checks.

They live apart from the job so that `job.py` (the pipeline) and `finalize.py` (the outputs) both read
them without importing each other.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from editcaption.checks.config import ChecksConfig as SharedChecksConfig
from editcaption.config import JobInputs
from editcaption.engines import EngineConfig, SamplingSettings
from editcaption.prompts.scoring import EditScoreConfig
from editcaption.synthesis.route import RoutingConfig


class FilterConfig(BaseModel):
    """Which best candidates are kept: both thresholds must pass (scores on EditScore's 0-10 scale), and,
    when asked, the pair's candidates must not contradict each other."""

    model_config = ConfigDict(extra="forbid")

    min_overall: float = Field(6.0, ge=0, le=10, description="Keep only if overall = sqrt(SC*PQ) >= this.")
    min_semantic_consistency: float = Field(5.0, ge=0, le=10, description="...and SC >= this.")
    max_candidate_disagreement: float | None = Field(
        None,
        ge=0,
        le=1,
        description="...and the candidates' wording disagrees less than this (0-1, `route.wording_"
        "disagreement`: 1 for opposite directions, 0 for paraphrases). 1.0 filters only pairs whose "
        "candidates reverse a direction; None never looks. A scorer that cannot see a direction ranks "
        "both senses alike, so a contradiction is the annotator's doubt the score does not show. The "
        "filtered pair still ranks high for review (`candidates_disagree`).",
    )


class ChecksConfig(SharedChecksConfig):
    """The shared checks on each pair's best candidate, plus how their findings raise review priority:
    a flip-inconsistent pair is sent to review."""

    flip_review_boost: float = Field(
        10.0, ge=0, description="Added to review priority when flip-inconsistent."
    )
    lint_review_boost: float = Field(0.5, ge=0, description="Added to review priority per lint finding kind.")


class SynthesisConfig(JobInputs):
    """The whole Stage 1 job: the pairs to read (see `JobInputs`), both models, thresholds, routing."""

    output: str = Field("runs/synthesis", description="Output folder or URI; rerunning into it resumes.")
    candidates_per_pair: int = Field(3, ge=1, description="Instructions the annotator writes per pair.")
    sampling: SamplingSettings = Field(
        default_factory=lambda: SamplingSettings(max_tokens=160, temperature=0.7, seed=0),
        description="Annotator sampling; with temperature > 0 candidates differ.",
    )
    annotator: EngineConfig
    scorer: EngineConfig
    editscore: EditScoreConfig = Field(default_factory=EditScoreConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    checks: ChecksConfig = Field(default_factory=ChecksConfig)
    pairs_per_batch: int | None = Field(
        None,
        ge=1,
        description="Pairs per engine batch and per committed shard; None sizes it from the annotator "
        "(vLLM: enough pairs for their candidates to fill max_num_seqs twice; others 8).",
    )
