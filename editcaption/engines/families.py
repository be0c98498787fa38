"""What each model family needs to be asked and read right, in one place.

Reasoning models answer after a reasoning block, and each family switches it, wraps its answer and is
parsed differently. The facts come from the published chat templates and model cards:

- GLM-4.5V (zai-org/GLM-4.5V): hybrid reasoning, on by default. The chat template takes
  `enable_thinking` (false appends `/nothink` and an empty `<think></think>`); the model itself writes
  `<think>…</think>` and boxes its final answer in `<|begin_of_box|>…<|end_of_box|>`. GLM's API takes
  `thinking: {"type": "enabled" | "disabled"}` and returns the reasoning in `reasoning_content`. vLLM's
  reasoning parser for it is `glm45` (the GLM-V README serves it with `--reasoning-parser glm45`).
- GLM-4.6V (106B, Glm4vMoe) and GLM-4.6V-Flash (9B, Glm4v): the same hybrid reasoning, switch, box and
  `glm45` parser as GLM-4.5V (the GLM-V README serves GLM-4.6V with `--reasoning-parser glm45` and
  switches thinking off with `chat_template_kwargs: {enable_thinking: false}`); 128k context.
- GLM-4.1V-9B-Thinking: always reasons (no switch) and wraps the answer in `<answer>…</answer>`, with a
  box inside for short answers (GLM-V's reward system and `trans_infer_cli.py` read `<answer>`).
- Qwen3-VL Thinking: the chat template opens `<think>` itself, so a reply holds only the closing
  `</think>`; vLLM's parser is `qwen3`. Qwen3-VL Instruct does not reason.
- EditScore (the `editscore` package, 0.2): a Qwen2.5-VL-7B LoRA (and 32B/72B) or a Qwen3-VL-8B
  variant, no reasoning block. Its Qwen2.5-VL path writes the chat template by hand with
  `<img1>: ` before each image (and the template's default system message); its Qwen3-VL path uses the
  processor's template with nothing added.

`family_of(model, name)` picks a family by explicit name or by the model id; an unknown model gets the
plain family, which changes nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from editcaption.engines.base import EngineConfigBase, SamplingSettings

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelFamily:
    """Defaults and reply format of one model family."""

    name: str
    match: str | None = None  # regex searched in the lower-cased model id or path
    thinks: bool = False  # reasons before answering unless switched off
    thinking_switch: str | None = None  # the chat-template argument that switches reasoning
    chat_template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    api_extra_body: Mapping[str, Any] = field(default_factory=dict)  # for its OpenAI-compatible API
    reasoning_parser: str | None = None  # vLLM's parser (`vllm.reasoning`) that splits the reasoning off
    reasoning_in_prompt: bool = False  # the template opens `<think>`: replies carry only `</think>`
    reasoning_max_tokens: int | None = None  # reply budget that leaves room for reasoning and the answer
    image_label: str | None = None  # text put before image i (`{i}` counts from 1), as the family was trained

    def reasons(self, chat_template_kwargs: Mapping[str, Any] | None = None) -> bool:
        """Whether replies start with reasoning under these chat-template arguments."""
        if not self.thinks:
            return False
        kwargs = chat_template_kwargs or {}
        return not (self.thinking_switch and kwargs.get(self.thinking_switch) is False)


def _frozen(d: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(d)


PLAIN = ModelFamily(name="plain")

FAMILIES: tuple[ModelFamily, ...] = (
    ModelFamily(
        name="glm-4.5v",
        match=r"glm-?4\.?5-?v",
        thinks=True,
        thinking_switch="enable_thinking",
        chat_template_kwargs=_frozen({"enable_thinking": True}),
        api_extra_body=_frozen({"thinking": {"type": "enabled"}}),
        reasoning_parser="glm45",
        reasoning_max_tokens=4096,
    ),
    ModelFamily(
        name="glm-4.6v",
        match=r"glm-?4\.?6-?v",
        thinks=True,
        thinking_switch="enable_thinking",
        chat_template_kwargs=_frozen({"enable_thinking": True}),
        api_extra_body=_frozen({"thinking": {"type": "enabled"}}),
        reasoning_parser="glm45",
        reasoning_max_tokens=4096,
    ),
    ModelFamily(
        name="glm-4.1v-thinking",
        match=r"glm-?4\.?1-?v",
        thinks=True,
        reasoning_parser="glm45",
        reasoning_max_tokens=8192,  # GLM-V's benchmark script cuts reasoning at 8192 tokens
    ),
    ModelFamily(
        name="editscore-qwen3-vl",
        match=r"editscore.*qwen-?3|qwen-?3.*editscore",
    ),
    ModelFamily(
        name="editscore-qwen2.5-vl",
        match=r"editscore",
        image_label="<img{i}>: ",
    ),
    ModelFamily(
        name="qwen3-vl-thinking",
        match=r"qwen-?3-?vl.*thinking",
        thinks=True,
        reasoning_parser="qwen3",
        reasoning_in_prompt=True,
        reasoning_max_tokens=8192,
    ),
    ModelFamily(name="qwen3-vl-instruct", match=r"qwen-?3-?vl"),
    PLAIN,
)
FAMILY_NAMES: tuple[str, ...] = tuple(f.name for f in FAMILIES)


def family_of(model: str, name: str | None = None) -> ModelFamily:
    """The family named `name`, or else the first whose pattern the model id or path matches."""
    if name is not None:
        by_name = {f.name: f for f in FAMILIES}
        if name not in by_name:
            raise ValueError(f"unknown model family {name!r}; known: {', '.join(FAMILY_NAMES)}")
        return by_name[name]
    key = model.lower().replace("_", "-")
    return next((f for f in FAMILIES if f.match and re.search(f.match, key)), PLAIN)


def merged(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`overrides` over `defaults`; an override of None removes that key."""
    out = {**defaults, **overrides}
    return {k: v for k, v in out.items() if v is not None}


def warn_if_reasoning_is_cut(engine: EngineConfigBase, sampling: SamplingSettings, role: str) -> None:
    """Warn when a reasoning model's reply budget is below its family's: its reasoning would use up
    `max_tokens` and every reply would end `truncated`. `role` names the engine in the message."""
    budget = engine.model_family().reasoning_max_tokens
    if engine.reasons() and budget and sampling.max_tokens < budget:
        _log.warning(
            "%s %s reasons before answering: max_tokens %d < %d leaves its replies cut inside the "
            "reasoning (recorded as truncated); raise max_tokens or switch reasoning off",
            role,
            engine.model,
            sampling.max_tokens,
            budget,
        )
