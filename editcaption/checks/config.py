"""`ChecksConfig`: which failure-mode checks a job runs, shared by every stage that runs them.

Synthesis and evaluation turn on the same checks with the same switches; each stage's config extends
this with what only it does with the results (synthesis: review-priority boosts; evaluation:
attribute coverage against a benchmark's reference instruction).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ChecksConfig(BaseModel):
    """Failure-mode checks run on each instruction a job writes (see `editcaption/checks/`)."""

    model_config = ConfigDict(extra="forbid")

    flip_consistency: bool = Field(
        False,
        description="Also caption the horizontally mirrored pair and compare directions: one more "
        "captioning request per pair (synthesis: per pair whose best instruction uses left/right).",
    )
    viewpoint_lint: bool = Field(True, description="Flag left/right without a frame, camera/object mix-ups.")
    lang: str = Field("en", description="Lexicon language (editcaption/checks/lexicon/<lang>.yaml).")
