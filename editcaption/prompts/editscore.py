"""The EditScore protocol's two prompts and the parser for their replies.

Semantic consistency (source + edited image + instruction) yields two scores: edit success and
over-editing; perceptual quality (edited image alone) yields two: naturalness and artifacts. Both are
integers on 0-`score_range`. The parser either returns exactly the two numbers the model wrote or a
reason code; it never clamps, rounds or fills in a number, because a made-up score would silently
pass or fail a candidate. Bump `EDITSCORE_PROMPT_VERSION` whenever the text changes.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

EDITSCORE_PROMPT_VERSION = "editscore-v1"

SC_FIELDS: tuple[str, str] = ("edit_success", "over_editing")
PQ_FIELDS: tuple[str, str] = ("naturalness", "artifacts")

ParseError = Literal["no_json", "missing_field", "wrong_count", "out_of_range", "not_a_number"]
PARSE_ERRORS: tuple[str, ...] = get_args(ParseError)

SYSTEM = (
    "You grade image edits strictly and consistently. You answer with a single JSON object, no other text."
)


def _answer_format(first: str, second: str) -> str:
    return (
        "Reply with one JSON object and nothing else, in this format:\n"
        '{"reasoning": "<one or two sentences>", "score": [' + first + ", " + second + "]}\n"
        f"where {first} and {second} are the two integers above, in that order."
    )


def semantic_consistency_messages(instruction: str, score_range: int = 25) -> list[dict[str, Any]]:
    """Chat messages asking how well an edit followed `instruction`; image parts: source, then edited."""
    _check_range(score_range)
    if not instruction.strip():
        raise ValueError("cannot score an empty instruction")
    user = f"""The first image is the ORIGINAL. The second image is the ORIGINAL after an editor applied \
this instruction:
<instruction>{instruction.strip()}</instruction>

Give two integer scores, each from 0 to {score_range}:
(a) edit_success: how completely and accurately the second image carries out the instruction \
(0 = not carried out at all, {score_range} = exactly what was asked).
(b) over_editing: how well everything the instruction did not ask to change is kept as it was in the \
original: objects, layout, identity, colours, background, framing (0 = changed far beyond the \
request, {score_range} = nothing else changed).
Judge only these two things; image quality is graded separately.

{_answer_format("a", "b")}"""
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": user}],
        },
    ]


def perceptual_quality_messages(score_range: int = 25) -> list[dict[str, Any]]:
    """Chat messages asking how good the edited image looks on its own; one image part: the edited one."""
    _check_range(score_range)
    user = f"""This image was produced by an image editor. Judge it on its own, without guessing what \
the edit was.

Give two integer scores, each from 0 to {score_range}:
(a) naturalness: how plausible and coherent the scene looks: lighting, shadows, reflections, \
perspective, proportions, how inserted things blend in (0 = clearly impossible or fake, \
{score_range} = entirely convincing).
(b) artifacts: how free the image is of visible flaws: blur, noise, seams, smeared or repeated \
textures, distorted faces, hands or text (0 = severe flaws, {score_range} = no flaws at all).

{_answer_format("a", "b")}"""
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user}]},
    ]


@dataclass(frozen=True)
class ScoreReply:
    """A parsed reply: the two scores as written, or the reason there are none (exactly one is set)."""

    scores: tuple[float, float] | None
    error: ParseError | None = None

    def __post_init__(self) -> None:
        if (self.scores is None) == (self.error is None):
            raise ValueError("exactly one of scores and error must be set")


def parse_score_reply(
    text: str | None, score_range: int, field_names: tuple[str, str] | None = None
) -> ScoreReply:
    """The two scores in an EditScore reply, or why they cannot be read.

    Accepts code fences, a `<think>` block, prose around the JSON, single quotes and trailing commas
    (through a Python-literal parse, which only succeeds when the reading is unambiguous), `score` as a
    list of two numbers or as two named fields, and numbers written as strings. `field_names` are the
    names the asking prompt used (`SC_FIELDS` or `PQ_FIELDS`); None accepts either prompt's pair. When
    several objects carry a score, the last one wins: models that restate or correct themselves put
    their final answer last. Out-of-range values are errors, never clamped.
    """
    _check_range(score_range)
    if not text or not text.strip():
        return ScoreReply(None, "no_json")
    objects = [o for o in _json_objects(_strip_reasoning(text)) if isinstance(o, dict)]
    if not objects:
        return ScoreReply(None, "no_json")
    names = (field_names,) if field_names else (SC_FIELDS, PQ_FIELDS)
    found = [v for v in (_score_value(o, names) for o in objects) if v is not _MISSING]
    if not found:
        return ScoreReply(None, "missing_field")
    value = found[-1]
    items = list(value) if isinstance(value, list | tuple) else [value]
    if len(items) != 2:
        return ScoreReply(None, "wrong_count")
    numbers = [_number(x) for x in items]
    if None in numbers:
        return ScoreReply(None, "not_a_number")
    a, b = numbers
    if not all(0 <= x <= score_range for x in (a, b)):
        return ScoreReply(None, "out_of_range")
    return ScoreReply((a, b))


def _check_range(score_range: int) -> None:
    if score_range < 1:
        raise ValueError(f"score_range must be at least 1, got {score_range}")


_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


def _strip_reasoning(text: str) -> str:
    """Drop reasoning blocks: closed ones, a dangling close (template opened it), an unclosed open."""
    text = _THINK.sub("", text)
    text = re.split(r"</think>", text, flags=re.IGNORECASE)[-1]
    return re.split(r"<think>", text, flags=re.IGNORECASE)[0]


def _json_objects(text: str) -> list[Any]:
    """The JSON-like objects in a reply, in reading order; linear-ish even on degenerate output.

    Strict JSON is found by the C decoder at each `{` that can open a JSON object (it handles braces
    inside strings). What it leaves is tried as a Python literal over brace-balanced spans, outermost
    first, so an unloadable span lets its inner ones be tried; spans overlapping a found object are
    skipped. Quotes are not tracked in that lenient pass, so a lenient object whose strings hold an
    unbalanced brace is not recovered.
    """
    decoder = json.JSONDecoder()
    found: list[tuple[int, int, Any]] = []
    for match in re.finditer(r"\{(?=\s*[\"}])", text):
        start = match.start()
        if found and start < found[-1][1]:
            continue
        try:
            value, end = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            continue
        found.append((start, end, value))
    for start, end in _balanced_spans(text):
        if any(start < e and s < end for s, e, _ in found):
            continue
        value = _literal(text[start:end])
        if value is not None:
            found.append((start, end, value))
    return [value for _, _, value in sorted(found, key=lambda f: f[0])]


def _balanced_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every `{...}` with balanced braces, by start; quotes are not tracked here."""
    opened: list[int] = []
    spans = []
    for i, c in enumerate(text):
        if c == "{":
            opened.append(i)
        elif c == "}" and opened:
            spans.append((opened.pop(), i + 1))
    return sorted(spans)


def _literal(span: str) -> Any:
    """A Python literal (single quotes, trailing commas), or None when the span is not one."""
    try:
        return ast.literal_eval(span)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


_MISSING = object()


def _key(name: object) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower()) if isinstance(name, str) else ""


def _score_value(obj: dict, names: tuple[tuple[str, str], ...]) -> Any:
    """`score` (or `scores`) as given, or a named pair; `_MISSING` when the object has neither."""
    by_key = {_key(k): v for k, v in obj.items()}
    for key in ("score", "scores"):
        if key in by_key:
            value = by_key[key]
            return _named_pair(value, names) if isinstance(value, dict) else value
    return _named_pair(obj, names)


def _named_pair(obj: dict, names: tuple[tuple[str, str], ...]) -> Any:
    by_key = {_key(k): v for k, v in obj.items()}
    for first, second in names:
        if _key(first) in by_key and _key(second) in by_key:
            return [by_key[_key(first)], by_key[_key(second)]]
    return _MISSING


_DECIMAL = re.compile(r"[+-]?\d+(?:\.\d+)?")


def _number(value: Any) -> float | None:
    """A float for an int, float or decimal string; None for anything else (bools and NaN included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return math.copysign(math.inf, value)
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        return float(value.strip())
    return None
