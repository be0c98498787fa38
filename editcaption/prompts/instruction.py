"""The instruction-synthesis prompt, its requests (`caption_expand`) and its parser (`read_instruction`,
`make_candidate`), shared by synthesis and serving.

The prompt targets the three ways VLMs get edit instructions wrong: orientation (left/right flips),
viewpoint (whose left; camera vs object motion) and attributes (what exactly changed). Bump
`PROMPT_VERSION` whenever the text changes: every candidate records the version that wrote it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from editcaption.engines.base import EngineRequest, EngineResult, SamplingSettings
from editcaption.prompts.answer import AnswerError, ReplyLike, extract_answer
from editcaption.schema import Candidate

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


def instruction_request(
    request_id: str, source: bytes, target: bytes, sampling: SamplingSettings, seed_offset: int = 0
) -> EngineRequest:
    """The captioning request for one (source, target) pair: the instruction prompt with both images.
    `seed_offset` gives each of several samples of one pair its own seed (when the sampling has one)."""
    seed = None if sampling.seed is None else sampling.seed + seed_offset
    return EngineRequest(
        request_id=request_id,
        images=[source, target],
        messages=instruction_messages(),
        sampling=sampling.model_copy(update={"seed": seed}) if seed_offset else sampling,
    )


def caption_expand(row: dict[str, Any], n: int, sampling: SamplingSettings) -> list[EngineRequest]:
    """`n` instruction requests for a good pair, none for a quarantined one."""
    if row["quarantine_reason"] is not None:
        return []
    return [
        instruction_request(f"{row['pair_id']}:{i}", row["source"], row["target"], sampling, seed_offset=i)
        for i in range(n)
    ]


def make_candidate(
    pair_id: str, result: EngineResult, model: str, reasoning_in_prompt: bool = False
) -> dict[str, Any]:
    """A Candidate row from the annotator's reply; a reply without an instruction is kept with the reason
    (`truncated` when max_tokens cut it, often inside its reasoning)."""
    read = read_instruction(result, reasoning_in_prompt) if result.error is None else None
    return Candidate(
        pair_id=pair_id,
        candidate_id=result.request_id,
        instruction=None if read is None else read.instruction,
        raw_text=result.text or "",
        model=model,
        prompt_version=PROMPT_VERSION,
        parsed=read is not None and read.instruction is not None,
        error=result.error,
        parse_error=None if read is None else read.error,
        finish_reason=result.finish_reason,
    ).to_row()
