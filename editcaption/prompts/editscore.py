"""The EditScore protocol's two prompts, in two variants, and the parser for their replies.

Semantic consistency (source + edited image + instruction) yields two scores: edit success and
over-editing; perceptual quality (edited image alone) yields two: naturalness and artifacts. Both are
integers on 0-`score_range`.

Two prompt variants:
- `upstream` (the default for scoring): the texts EditScore's checkpoints were trained with, read at run
  time from the `editscore` package's `vie_prompts.py` and put together the way its `EditScore` class
  does (one user message, no system message). The package is installed with `--no-deps` and only that
  one file is loaded, by path: its `__init__` inserts a relative `editscore` folder into `sys.path` and
  imports numpy, regex and json_repair, and its requirements pull in torch, av and qwen-vl-utils.
- `editcaption`: our own wording with a system message (`semantic_consistency_messages`,
  `perceptual_quality_messages`), which the miniature world's scorer was trained on.

The parser either returns exactly the two numbers the model wrote or a reason code; it never clamps,
rounds or fills in a number, because a made-up score would silently pass or fail a candidate. JSON that
is broken the way EditScore's replies break (unescaped quotes in the reasoning, a missing brace) is
repaired with `json-repair`, as EditScore's own parser does. Bump `EDITSCORE_PROMPT_VERSION` whenever
our text changes.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, get_args

import json_repair

from editcaption.prompts.answer import AnswerError, ReplyLike, extract_answer

EDITSCORE_PROMPT_VERSION = "editscore-v1"
EditScorePrompt = Literal["upstream", "editcaption"]
UPSTREAM_REQUIREMENT = "editscore==0.2"

SC_FIELDS: tuple[str, str] = ("edit_success", "over_editing")
PQ_FIELDS: tuple[str, str] = ("naturalness", "artifacts")

ParseError = Literal[AnswerError, "no_json", "missing_field", "wrong_count", "out_of_range", "not_a_number"]
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


@functools.cache
def upstream_prompt_texts() -> ModuleType:
    """EditScore's `vie_prompts.py`, loaded by path from the installed `editscore` package (its
    `__init__` is never run)."""
    spec = importlib.util.find_spec("editscore")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the upstream EditScore prompts come from the `editscore` package: "
            f"pip install --no-deps {UPSTREAM_REQUIREMENT} (or set editscore.prompt: editcaption)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "vie_prompts.py"
    file_spec = importlib.util.spec_from_file_location("editscore_vie_prompts", path)
    if file_spec is None or file_spec.loader is None or not path.is_file():
        raise ModuleNotFoundError(f"the installed editscore package has no {path.name} at {path.parent}")
    module = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(module)
    return module


def upstream_semantic_consistency_text(instruction: str, score_range: int = 25) -> str:
    """EditScore's semantic-consistency prompt, composed as its `EditScore` class does: context, the
    two-image edit rule and the SC rule joined by newlines, '10' replaced by the score range, then the
    instruction put in."""
    _check_range(score_range)
    if not instruction.strip():
        raise ValueError("cannot score an empty instruction")
    t = upstream_prompt_texts()
    rules = t._prompts_0shot_tie_rule_SC.replace("10", str(score_range))
    prompt = "\n".join([t._context_no_delimit_reasoning_first, t._prompts_0shot_two_image_edit_rule, rules])
    return prompt.replace("<instruction>", instruction.strip())


def upstream_perceptual_quality_text(score_range: int = 25) -> str:
    """EditScore's perceptual-quality prompt: context and the PQ rule, '10' replaced by the range."""
    _check_range(score_range)
    t = upstream_prompt_texts()
    return "\n".join(
        [t._context_no_delimit_reasoning_first, t._prompts_0shot_rule_PQ.replace("10", str(score_range))]
    )


def _upstream_message(text: str, n_images: int, image_label: str | None) -> list[dict[str, Any]]:
    """One user message: the images, each after its label when the family was trained with one
    (EditScore's Qwen2.5-VL path writes `<img1>: ` before each image), then the prompt."""
    parts: list[dict[str, Any]] = []
    for i in range(1, n_images + 1):
        if image_label:
            parts.append({"type": "text", "text": image_label.format(i=i)})
        parts.append({"type": "image"})
    return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]


def editscore_messages(
    kind: Literal["sc", "pq"],
    prompt: EditScorePrompt,
    score_range: int,
    instruction: str | None = None,
    image_label: str | None = None,
) -> list[dict[str, Any]]:
    """The chat messages of one EditScore question in the chosen prompt variant. SC has two image
    parts (source, edited), PQ one (edited)."""
    if kind == "sc":
        if instruction is None:
            raise ValueError("the semantic-consistency prompt needs the instruction")
        if prompt == "editcaption":
            return semantic_consistency_messages(instruction, score_range)
        return _upstream_message(upstream_semantic_consistency_text(instruction, score_range), 2, image_label)
    if prompt == "editcaption":
        return perceptual_quality_messages(score_range)
    return _upstream_message(upstream_perceptual_quality_text(score_range), 1, image_label)


@dataclass(frozen=True)
class ScoreReply:
    """A parsed reply: the two scores as written, or the reason there are none (exactly one is set)."""

    scores: tuple[float, float] | None
    error: ParseError | None = None

    def __post_init__(self) -> None:
        if (self.scores is None) == (self.error is None):
            raise ValueError("exactly one of scores and error must be set")


def parse_score_reply(
    reply: str | ReplyLike | None,
    score_range: int,
    field_names: tuple[str, str] | None = None,
    reasoning_in_prompt: bool = False,
) -> ScoreReply:
    """The two scores in an EditScore reply, or why they cannot be read.

    The answer is found by `extract_answer` (reasoning blocks, answer wrappers, fences; a reply cut by
    `max_tokens` is `truncated`). In it: prose around the JSON, single quotes and trailing commas
    (through a Python-literal parse, which only succeeds when the reading is unambiguous), and, when
    neither finds a score, `json-repair` on the JSON-like span (unescaped quotes inside the reasoning,
    a missing closing brace). `score` may be a list of two numbers or two named fields, numbers may be
    written as strings. `field_names` are the names the asking prompt used (`SC_FIELDS` or
    `PQ_FIELDS`); None accepts either prompt's pair. When several objects carry a score, the last one
    wins: models that restate or correct themselves put their final answer last. Out-of-range values
    are errors, never clamped.
    """
    _check_range(score_range)
    answer = extract_answer(reply, reasoning_in_prompt)
    if answer.text is None:
        return ScoreReply(None, "no_json" if answer.error == "empty" else answer.error)
    names = (field_names,) if field_names else (SC_FIELDS, PQ_FIELDS)
    objects = [o for o in _json_objects(answer.text) if isinstance(o, dict)]
    found = [v for v in (_score_value(o, names) for o in objects) if v is not _MISSING]
    if not found:
        repaired = _repaired_object(answer.text)
        if repaired is not None:
            objects.append(repaired)
            found = [v for v in [_score_value(repaired, names)] if v is not _MISSING]
    if not objects:
        return ScoreReply(None, "no_json")
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


def _repaired_object(text: str) -> dict | None:
    """The JSON-like span of a reply (first `{` to last `}`, or to the end when it never closes)
    repaired by `json-repair`; None when there is no span or it repairs to no object."""
    start = text.find("{")
    if start < 0:
        return None
    end = text.rfind("}")
    span = text[start : end + 1] if end > start else text[start:]
    try:
        value = json_repair.loads(span)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) and value else None


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
