"""The instruction-synthesis prompt and its parser.

The prompt targets the three ways VLMs get edit instructions wrong: orientation (left/right flips),
viewpoint (whose left; camera vs object motion) and attributes (what exactly changed). Bump
`PROMPT_VERSION` whenever the text changes: every candidate records the version that wrote it.
"""

from __future__ import annotations

import json
import re
from typing import Any

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


_LABEL = re.compile(r"^\s*(?:\*\*)?(?:final\s+)?instruction(?:\*\*)?\s*[:\-]\s*", re.IGNORECASE)
_FENCE = re.compile(r"^```[a-z]*\s*|\s*```$", re.IGNORECASE)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


def parse_instruction(text: str | None) -> str | None:
    """The instruction in a reply, or None when there is none.

    Accepts the bare instruction, a labelled one ("Instruction: ..."), a JSON object with an
    `instruction` key, code fences and a reasoning block before it. Never invents text.
    """
    if not text:
        return None
    text = _THINK.sub("", text).strip()
    text = _FENCE.sub("", text).strip()
    if text.startswith("{"):
        try:
            value = json.loads(text).get("instruction")
        except (json.JSONDecodeError, AttributeError):
            value = None
        text = value.strip() if isinstance(value, str) else ""
    text = _LABEL.sub("", text).strip().strip('"').strip()
    text = re.sub(r"\s+", " ", text)
    return text if any(c.isalpha() for c in text) else None
