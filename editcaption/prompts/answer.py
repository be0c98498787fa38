"""The answer inside a model's reply: one extractor for every parser (instruction, EditScore, judge).

Replies come in the shapes the model families publish (see `engines/families.py`):

- a reasoning block first: `<think>…</think>` written by the model (GLM-4.5V, GLM-4.1V-Thinking), or
  only the closing `</think>` when the chat template opened it (Qwen3-VL Thinking), or split off by the
  engine (vLLM's reasoning parser, an API's `reasoning_content`: then `text` is the answer alone);
- an answer wrapper: GLM-4.5V's `<|begin_of_box|>…<|end_of_box|>`, GLM-4.1V's `<answer>…</answer>`;
- a markdown fence around the answer.

A reply cut by `max_tokens` (`finish_reason == "length"`) or cut inside its reasoning is `truncated`,
whatever it holds: the end of a cut reply is not an answer. Nothing is guessed: a reply whose answer
cannot be told apart gets a reason code instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

AnswerError = Literal[
    "truncated",  # cut by max_tokens, or inside its reasoning or answer wrapper
    "empty",  # nothing at all
    "no_answer",  # reasoning, then nothing
    "ambiguous_answer",  # several answer wrappers: which one is the answer is a guess
]
ANSWER_ERRORS: tuple[str, ...] = get_args(AnswerError)


class ReplyLike(Protocol):
    """What an engine returns (`EngineResult` has these fields)."""

    text: str | None
    reasoning: str | None
    finish_reason: str | None


@dataclass(frozen=True)
class Reply:
    """A reply as an engine returned it: the answer text, reasoning the engine split off, and why the
    model stopped (`stop`, `length`, or None when unknown)."""

    text: str | None
    reasoning: str | None = None
    finish_reason: str | None = None


@dataclass(frozen=True)
class Answer:
    """The answer text, or the reason there is none (exactly one is set); the reasoning, if any."""

    text: str | None
    error: AnswerError | None = None
    reasoning: str | None = None

    def __post_init__(self) -> None:
        if (self.text is None) == (self.error is None):
            raise ValueError("exactly one of text and error must be set")


_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_WRAPPERS = (
    ("<answer>", "</answer>"),  # GLM-4.1V-Thinking
    ("<|begin_of_box|>", "<|end_of_box|>"),  # GLM-4.5V (inside <answer> for GLM-4.1V)
)
_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)\n?```", re.DOTALL)
_FENCE_EDGE = re.compile(r"^```[A-Za-z0-9_-]*\s*|\s*```$")  # a fence opened or closed alone


def as_reply(reply: str | ReplyLike | None) -> Reply:
    if reply is None or isinstance(reply, str):
        return Reply(reply)
    return Reply(reply.text, reply.reasoning, reply.finish_reason)


def extract_answer(reply: str | ReplyLike | None, reasoning_in_prompt: bool = False) -> Answer:
    """The answer in a reply, unwrapped, or why there is none.

    `reasoning_in_prompt`: the chat template opened the reasoning block (Qwen3-VL Thinking), so a raw
    reply without `</think>` never left its reasoning.
    """
    r = as_reply(reply)
    reasoning = r.reasoning or None
    if r.finish_reason == "length":
        return Answer(None, "truncated", reasoning)
    text = r.text or ""
    close = _THINK_CLOSE.search(text)
    if close:
        reasoning = _THINK_OPEN.sub("", text[: close.start()]).strip() or reasoning
        text = text[close.end() :]
    elif reasoning_in_prompt and r.reasoning is None and text.strip():
        return Answer(None, "truncated", text.strip())
    text = _THINK_CLOSE.sub("", _THINK_BLOCK.sub("", text))
    if _THINK_OPEN.search(text):
        return Answer(None, "truncated", reasoning)
    if not text.strip():
        return Answer(None, "no_answer" if reasoning else "empty", reasoning)
    for opening, closing in _WRAPPERS:
        text, error = _unwrap(text, opening, closing, r.finish_reason)
        if error is not None:
            return Answer(None, error, reasoning)
    fenced = _FENCE.findall(text)
    text = fenced[0] if len(fenced) == 1 else _FENCE_EDGE.sub("", text.strip())
    text = text.strip()
    if not text:
        return Answer(None, "no_answer" if reasoning else "empty", reasoning)
    return Answer(text, None, reasoning)


def _unwrap(
    text: str, opening: str, closing: str, finish_reason: str | None
) -> tuple[str, AnswerError | None]:
    """The text inside the one wrapper, or the text unchanged when there is none.

    An opened wrapper the model never closed is the answer to the end only when the model says it
    stopped by itself; with no finish reason it may have been cut, so it counts as truncated.
    """
    if opening not in text:
        return text.replace(closing, ""), None
    inside = re.findall(re.escape(opening) + r"(.*?)" + re.escape(closing), text, re.DOTALL)
    if len(inside) > 1:
        return text, "ambiguous_answer"
    if inside:
        return inside[0], None
    if finish_reason == "stop":
        return text.split(opening, 1)[1], None
    return text, "truncated"
