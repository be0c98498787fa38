"""The instruction-synthesis prompt and its parser.

The prompt targets the three ways VLMs get edit instructions wrong: orientation (left/right flips),
viewpoint (whose left; camera vs object motion) and attributes (what exactly changed). Bump
`PROMPT_VERSION` whenever the text changes: every candidate records the version that wrote it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from editcaption.prompts.answer import AnswerError, ReplyLike, extract_answer

PROMPT_VERSION = "instruction-v1"

SYSTEM = "You write precise image-editing instructions."

USER = """The first image is the SOURCE, the second is the TARGET. Write the one instruction that turns \
the source into the target.
Rules:
- Say "the viewer's left/right" or "<subject>'s own left/right" for every left or right; never a bare "left".
- If the whole view moved, zoomed or rotated, say it is the camera; otherwise describe what the objects did.
- Name every attribute that changed: colour, material, count, size, text, pose, position.
- Mention only what changed. One short imperative sentence or two.
Reply with the instruction only."""


def instruction_messages() -> list[dict[str, Any]]:
    """Chat messages asking for one instruction; the two image parts are filled source, then target."""
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": USER}],
        },
    ]


_LABEL = re.compile(
    r"^\s*(?:\*\*)?(?:final\s+)?instruction(?:\*\*)?\s*[:\-]\s*(?:\*\*)?\s*", re.IGNORECASE
)  # "Instruction: ...", "**Instruction**: ...", "**Instruction:** ..."

InstructionError = Literal[AnswerError, "no_instruction"]


@dataclass(frozen=True)
class InstructionReply:
    """The instruction in a reply, or why there is none (exactly one is set)."""

    instruction: str | None
    error: InstructionError | None = None


def read_instruction(reply: str | ReplyLike | None, reasoning_in_prompt: bool = False) -> InstructionReply:
    """The instruction in a reply, or the reason code when there is none.

    The answer is found by `extract_answer` (reasoning blocks, GLM's box and `<answer>` wrappers,
    fences; a reply cut by `max_tokens` is `truncated`); then the bare instruction, a labelled one
    ("Instruction: ..."), or a JSON object with an `instruction` key is accepted. Never invents text.
    """
    answer = extract_answer(reply, reasoning_in_prompt)
    if answer.text is None:
        return InstructionReply(None, answer.error)
    text = answer.text
    if text.startswith("{"):
        try:
            value = json.loads(text).get("instruction")
        except (json.JSONDecodeError, AttributeError):
            value = None
        text = value.strip() if isinstance(value, str) else ""
    text = _LABEL.sub("", text).strip().strip('"').strip()
    text = re.sub(r"\s+", " ", text)
    if not any(c.isalpha() for c in text):
        return InstructionReply(None, "no_instruction")
    return InstructionReply(text)


def parse_instruction(reply: str | ReplyLike | None, reasoning_in_prompt: bool = False) -> str | None:
    """The instruction in a reply, or None when there is none (`read_instruction` says why)."""
    return read_instruction(reply, reasoning_in_prompt).instruction
