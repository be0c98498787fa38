"""The three review task kinds: what an item shows (payload) and what an annotator answers (result).

Results are validated here, once, whichever door they came in by (web form, JSON, Label Studio import),
so the store only ever holds answers the exports can turn into contract records.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from editcaption.schema import ErrorType, Severity, Verdict

TaskKind = Literal["refine", "prefer", "judge"]
TASK_KINDS: tuple[str, ...] = get_args(TaskKind)
MAX_INSTRUCTION_CHARS = 4000


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class RefineResult(_Result):
    """The annotator kept (possibly edited) the best candidate, or rejected the pair as unusable."""

    action: Literal["accept", "reject"]
    instruction: str = Field(default="", max_length=MAX_INSTRUCTION_CHARS)
    fixed: list[ErrorType] = Field(default_factory=list, description="Failure modes the edit fixed.")

    @model_validator(mode="after")
    def _text_when_accepted(self) -> RefineResult:
        if self.action == "accept" and not self.instruction:
            raise ValueError("an accepted refinement needs a non-empty instruction")
        if len(set(self.fixed)) != len(self.fixed):
            raise ValueError("a failure mode is ticked twice")
        return self


class PreferResult(_Result):
    """Which of the two shown instructions is better, and what is wrong with the other one."""

    chosen: Literal["a", "b"]
    error_type: ErrorType = Field(description="The rejected instruction's primary error.")
    severity: Severity


class JudgeResult(_Result):
    """A verdict on one instruction; error verdicts name at least one error type, correct ones none."""

    verdict: Verdict
    error_types: list[ErrorType] = Field(default_factory=list)

    @model_validator(mode="after")
    def _types_match_verdict(self) -> JudgeResult:
        if self.verdict == "correct" and self.error_types:
            raise ValueError("a 'correct' verdict cannot carry error types")
        if self.verdict != "correct" and not self.error_types:
            raise ValueError(f"verdict {self.verdict!r} needs at least one error type")
        if len(set(self.error_types)) != len(self.error_types):
            raise ValueError("an error type is given twice")
        return self


RESULT_MODELS: dict[str, type[_Result]] = {
    "refine": RefineResult,
    "prefer": PreferResult,
    "judge": JudgeResult,
}


class RefinePayload(BaseModel):
    """Shown on a refine task: the best candidate, the others with their scores, why it was routed."""

    instruction: str
    candidates: list[dict[str, Any]] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)
    reference: str | None = None
    model: str | None = None
    overall: float | None = None


class PreferPayload(BaseModel):
    """Shown on a prefer task: two instructions for the same pair, as A and B."""

    instruction_a: str
    instruction_b: str
    model: str | None = None


class JudgePayload(BaseModel):
    """Shown on a judge task: one instruction, and where it came from (for rates by model and benchmark)."""

    instruction: str
    model: str
    benchmark: str


PAYLOAD_MODELS: dict[str, type[BaseModel]] = {
    "refine": RefinePayload,
    "prefer": PreferPayload,
    "judge": JudgePayload,
}


class BadResult(ValueError):
    """A submitted answer that does not fit its task kind; the message says which field and why."""


def validate_result(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """The answer as a clean dict, or BadResult naming each wrong field."""
    if kind not in RESULT_MODELS:
        raise BadResult(f"unknown task kind {kind!r}; kinds: {', '.join(TASK_KINDS)}")
    try:
        return RESULT_MODELS[kind].model_validate(data).model_dump()
    except ValidationError as exc:
        raise BadResult(_explain(exc)) from None


def validate_payload(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    if kind not in PAYLOAD_MODELS:
        raise BadResult(f"unknown task kind {kind!r}; kinds: {', '.join(TASK_KINDS)}")
    try:
        return PAYLOAD_MODELS[kind].model_validate(data).model_dump()
    except ValidationError as exc:
        raise BadResult(_explain(exc)) from None


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "answer"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
