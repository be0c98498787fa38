"""The evaluation judge's prompts (single instruction, and A vs B) and the parsers for their replies.

The judge sees the source and target images, a candidate instruction and, when the benchmark has
one, a reference instruction. It scores five dimensions and an overall grade on 1-5 and gives a
verdict in the human-evaluation vocabulary (`schema.Verdict`, `schema.ErrorType`), so judge and human
numbers land in the same table. The parsers return exactly what the judge wrote or a reason code:
a reply with any field missing, off the scale or outside the vocabulary is a counted failure, never
repaired. Bump `JUDGE_PROMPT_VERSION` whenever the text changes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from editcaption.prompts.answer import AnswerError, ReplyLike, extract_answer
from editcaption.prompts.editscore import _json_objects, _key, _number
from editcaption.schema import ERROR_TYPES, VERDICTS

JUDGE_PROMPT_VERSION = "judge-v1"

DIMENSIONS: tuple[str, ...] = ("correctness", "orientation", "viewpoint", "attributes", "conciseness")

JudgeError = Literal[
    AnswerError,  # truncated, empty, no_answer, ambiguous_answer (see prompts/answer.py)
    "no_json",  # no JSON object in the reply
    "missing_field",  # a score, the overall, the verdict, or (for an error verdict) the error types
    "not_a_number",  # a score that is not a number
    "not_an_integer",  # a score between two grades, e.g. 3.5
    "out_of_range",  # a score outside 1-5
    "bad_verdict",  # a verdict outside correct / minor_error / critical_error
    "bad_error_type",  # an error type outside orientation / viewpoint / attribute / other
    "inconsistent",  # "correct" with error types, or an error verdict with an empty list
]
JUDGE_ERRORS: tuple[str, ...] = get_args(JudgeError)

Preference = Literal["A", "B", "tie"]
PREFERENCES: tuple[str, ...] = get_args(Preference)
PairwiseError = Literal[AnswerError, "no_json", "missing_field", "bad_preference"]
PAIRWISE_ERRORS: tuple[str, ...] = get_args(PairwiseError)

SYSTEM = (
    "You evaluate image-editing instructions against the images they describe, strictly and "
    "consistently. You answer with a single JSON object, no other text."
)

CRITERIA = """Read an instruction as if an image editor were to follow it, word for word, starting \
from the SOURCE, with the TARGET as the result it should reach. The criteria, each graded as an \
integer from 1 to 5:
- correctness: does it ask for the change that actually happened? 5 = exactly that change; \
3 = the main change is right but part of it is wrong or left out; 1 = a different change, or none.
- orientation: are directions (left/right, up/down, clockwise, towards/away, the way things moved or \
turned) stated as they happen? 5 = every direction right and unambiguous, or none is needed; \
3 = a direction is ambiguous, such as a bare "left" that could mean either side; 1 = a direction is \
reversed.
- viewpoint: is the frame of reference clear (the viewer's left or the subject's own left), and is \
camera motion told apart from object motion? 5 = explicit wherever it matters and right; \
3 = left implicit where a reader could take it the wrong way; 1 = the wrong frame, or the camera \
moved and the instruction moves an object (or the reverse).
- attributes: are all changed attributes named (colour, material, count, size, text, pose, \
position)? 5 = all of them, precisely; 3 = some missing or vague; 1 = the key ones missing or wrong.
- conciseness: 5 = only what changed, in few words; 3 = some padding or mentions of things that \
stayed the same; 1 = long, repetitive, or mostly about things that did not change."""

GRADES = """Give each criterion above its grade, then:

overall, an integer from 1 to 5: how closely an editor following only this instruction would \
reproduce the TARGET (5 = exactly, 1 = not at all).

verdict, one of:
- "correct": following it reproduces the TARGET; wording issues at most.
- "minor_error": the main change is right, but a detail is missing, vague or slightly off.
- "critical_error": following it gives a clearly different result: the wrong change, a reversed \
direction, the wrong frame of reference, camera and object motion confused, or a key attribute wrong.

error_types, every kind of mistake the instruction makes (an empty list when the verdict is \
"correct", at least one entry otherwise):
- "orientation": a direction is wrong or ambiguous;
- "viewpoint": the frame of reference is wrong or unclear, or camera and object motion are confused;
- "attribute": a changed attribute is missing, vague or wrong;
- "other": anything else, such as the wrong object, an invented change or unreadable text."""

JUDGE_FORMAT = """Reply with one JSON object and nothing else, in this format:
{"reasoning": "<two or three sentences>", "scores": {"correctness": n, "orientation": n, \
"viewpoint": n, "attributes": n, "conciseness": n}, "overall": n, \
"verdict": "correct" | "minor_error" | "critical_error", "error_types": ["orientation", ...]}"""

PAIRWISE_FORMAT = """Reply with one JSON object and nothing else, in this format:
{"reason": "<two or three sentences>", "preferred": "A" | "B" | "tie"}"""

_IMAGES = "The first image is the SOURCE, the second is the TARGET."


def _reference(reference: str | None) -> str:
    if reference is None or not reference.strip():
        return ""
    return (
        "\nA reference instruction written for this pair is given for context. It can be imperfect "
        "itself: judge against the images, and use it only to understand what changed.\n"
        f"<reference>{reference.strip()}</reference>\n"
    )


def _messages(user: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": user}],
        },
    ]


def _check_instruction(instruction: str) -> str:
    if not instruction or not instruction.strip():
        raise ValueError("cannot judge an empty instruction")
    return instruction.strip()


def judge_messages(instruction: str, reference: str | None = None) -> list[dict[str, Any]]:
    """Chat messages asking the judge to grade one instruction; image parts: source, then target."""
    user = f"""{_IMAGES} This instruction was written to describe the edit from one to the other:
<instruction>{_check_instruction(instruction)}</instruction>
{_reference(reference)}
{CRITERIA}

{GRADES}

{JUDGE_FORMAT}"""
    return _messages(user)


def pairwise_messages(
    instruction_a: str, instruction_b: str, reference: str | None = None
) -> list[dict[str, Any]]:
    """Chat messages asking which of two instructions is better; image parts: source, then target.

    Position bias is measured by asking twice with A and B swapped (`position_swap_agreement`).
    """
    user = f"""{_IMAGES} Two instructions, A and B, were written to describe the edit from one to \
the other:
<instruction_a>{_check_instruction(instruction_a)}</instruction_a>
<instruction_b>{_check_instruction(instruction_b)}</instruction_b>
{_reference(reference)}
Decide which one an editor should follow to reproduce the TARGET.

{CRITERIA}

A mistake that changes the result (the wrong change, a reversed direction, the wrong frame of \
reference, camera and object motion confused, a key attribute wrong) outweighs any number of small \
ones. Answer "tie" only when neither is better on \
any criterion. Their order says nothing about their quality.

{PAIRWISE_FORMAT}"""
    return _messages(user)


@dataclass(frozen=True)
class JudgeReply:
    """A parsed judge reply: all fields as written, or `error` and no values at all."""

    scores: dict[str, int] | None
    overall: int | None
    verdict: str | None
    error_types: tuple[str, ...] = ()
    reasoning: str | None = None
    error: JudgeError | None = None

    def __post_init__(self) -> None:
        complete = self.scores is not None and self.overall is not None and self.verdict is not None
        if complete == (self.error is not None):
            raise ValueError("a reply is either complete or carries an error, not both or neither")


@dataclass(frozen=True)
class PairwiseReply:
    """A parsed A-vs-B reply: the preference as written, or the reason there is none."""

    preferred: Preference | None
    reason: str | None = None
    error: PairwiseError | None = None

    def __post_init__(self) -> None:
        if (self.preferred is None) == (self.error is None):
            raise ValueError("exactly one of preferred and error must be set")


_ABSENT = object()
_OVERALL_KEYS = ("overall", "overallscore")
_SCORES_KEYS = ("scores", "dimensions", "dimensionscores")
_ERROR_KEYS = ("errortypes", "errortype", "errors")
_DIMENSION_KEYS = {
    **{_key(d): d for d in DIMENSIONS},
    "attributecompleteness": "attributes",
    "frameofreference": "viewpoint",
}


def parse_judgment(text: str | ReplyLike | None) -> JudgeReply:
    """The judge's grades in a reply, or why they cannot be read.

    The answer is found by `extract_answer` (reasoning blocks, answer wrappers, fences; a reply cut by
    `max_tokens` is `truncated`). Accepts prose around the JSON, single quotes and trailing commas,
    key spellings that differ in case or separators ("Overall Score"), the five scores nested under
    `scores` or at the top level, integers written as strings or as 4.0, and a verdict or error type
    written with spaces or hyphens or in the plural ("Minor error", "attributes"). When several objects
    hold a verdict, the last one wins: a judge that corrects itself puts its final answer last.
    """
    found = _last_object(text, lambda o: any(k in o for k in ("verdict", *_OVERALL_KEYS, *_SCORES_KEYS)))
    if isinstance(found, str):
        return _failed(found)
    nested = next((v for k, v in found.items() if k in _SCORES_KEYS and isinstance(v, dict)), {})
    fields = {**{_key(k): v for k, v in nested.items()}, **found}
    by_dimension = {_DIMENSION_KEYS[k]: v for k, v in fields.items() if k in _DIMENSION_KEYS}
    overall = next((fields[k] for k in _OVERALL_KEYS if k in fields), _ABSENT)
    errors = next((fields[k] for k in _ERROR_KEYS if k in fields), None)
    if len(by_dimension) < len(DIMENSIONS) or overall is _ABSENT or "verdict" not in fields:
        return _failed("missing_field")
    grades: dict[str, int] = {}
    for name, value in [*by_dimension.items(), ("overall", overall)]:
        grade = _grade(value)
        if isinstance(grade, str):
            return _failed(grade)
        grades[name] = grade
    verdict = _vocabulary(fields["verdict"], VERDICTS, ("",))
    if verdict is None:
        return _failed("bad_verdict")
    error_types = _error_types(errors)
    if error_types is None:
        if verdict != "correct":
            return _failed("missing_field")
        error_types = ()
    if isinstance(error_types, str):
        return _failed(error_types)
    if (verdict == "correct") == bool(error_types):
        return _failed("inconsistent")
    reasoning = fields.get("reasoning")
    return JudgeReply(
        scores={d: grades[d] for d in DIMENSIONS},
        overall=grades["overall"],
        verdict=verdict,
        error_types=error_types,
        reasoning=reasoning if isinstance(reasoning, str) else None,
    )


def parse_preference(text: str | ReplyLike | None) -> PairwiseReply:
    """The preferred instruction ("A", "B" or "tie") in an A-vs-B reply, or why it cannot be read.

    Accepts the same wrappings as `parse_judgment`, any letter case, and "Instruction A" for "A".
    """
    found = _last_object(text, lambda o: "preferred" in o or "preference" in o)
    if isinstance(found, str):
        return PairwiseReply(None, error=found)
    value = found.get("preferred", found.get("preference"))
    label = _key(value).removeprefix("instruction") if isinstance(value, str) else ""
    preferred = {"a": "A", "b": "B", "tie": "tie"}.get(label)
    if preferred is None:
        return PairwiseReply(None, error="bad_preference")
    reason = found.get("reason", found.get("reasoning"))
    return PairwiseReply(preferred, reason=reason if isinstance(reason, str) else None)


def _failed(error: JudgeError) -> JudgeReply:
    return JudgeReply(scores=None, overall=None, verdict=None, error=error)


def _last_object(reply: str | ReplyLike | None, wanted: Callable[[dict], bool]) -> dict[str, Any] | str:
    """The last JSON object (keys normalised) for which `wanted` holds, or a reason code."""
    answer = extract_answer(reply)
    if answer.text is None:
        return "no_json" if answer.error == "empty" else answer.error
    objects = [{_key(k): v for k, v in o.items()} for o in _json_objects(answer.text) if isinstance(o, dict)]
    if not objects:
        return "no_json"
    matching = [o for o in objects if wanted(o)]
    return matching[-1] if matching else "missing_field"


def _grade(value: Any) -> int | JudgeError:
    number = _number(value)
    if number is None:
        return "not_a_number"
    if not 1 <= number <= 5:
        return "out_of_range"
    if not number.is_integer():
        return "not_an_integer"
    return int(number)


def _vocabulary(value: Any, words: tuple[str, ...], suffixes: tuple[str, ...]) -> str | None:
    """The vocabulary word `value` spells, allowing case, separators and the given suffixes."""
    if not isinstance(value, str):
        return None
    spelled = _key(value)
    return next((w for w in words for s in suffixes if spelled == _key(w) + s), None)


_SPLIT = re.compile(r"[,;]")


def _error_types(value: Any) -> tuple[str, ...] | JudgeError | None:
    """Error types in vocabulary order, deduplicated; None when absent, a reason code when unreadable.

    A missing list is only acceptable with a "correct" verdict, which has no errors to list.
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = [] if _key(value) in ("", "none") else _SPLIT.split(value)
    if not isinstance(value, list | tuple):
        return "bad_error_type"
    names = [_vocabulary(v, ERROR_TYPES, ("", "s", "error", "errors")) for v in value]
    if None in names:
        return "bad_error_type"
    return tuple(t for t in ERROR_TYPES if t in names)
