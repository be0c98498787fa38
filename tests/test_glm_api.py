"""GLM through its OpenAI-compatible API: the `thinking` field goes out, `reasoning_content`, `content`
and `finish_reason` come back and end up where the parsers see them.

GLM's API is paid and unreachable from here, so `api_standins.GLMStandIn` stands in for it on loopback:
it answers in the shape GLM's API documents for glm-4.5v (choices[0].message with `reasoning_content`
and a `content` whose answer is inside <|begin_of_box|>…<|end_of_box|>, choices[0].finish_reason,
usage), follows the `thinking` field it receives, and records every request body so the test can check
what was sent.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from api_standins import ANSWER, REASONING_TOKENS, GLMStandIn, serve_standin
from PIL import Image

from editcaption.engines import EngineResult
from editcaption.engines.openai_engine import OpenAIChatClient
from editcaption.prompts.instruction import caption_expand, make_candidate
from editcaption.synthesis.config import SynthesisConfig

CONFIG = Path(__file__).resolve().parents[1] / "ray_jobs" / "configs" / "synthesis-glm-api.yaml"


@pytest.fixture
def glm_api(monkeypatch):
    monkeypatch.setenv("GLM_API_KEY", "test-key")
    with serve_standin(GLMStandIn) as url:
        yield url


def _png(colour: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), colour).save(buf, format="PNG")
    return buf.getvalue()


def _config(base_url: str, **annotator: object) -> SynthesisConfig:
    """The shipped GLM API job config with only the endpoint (and the given annotator keys) changed."""
    raw = yaml.safe_load(CONFIG.read_text())
    raw["annotator"].update(base_url=base_url, **annotator)
    return SynthesisConfig.model_validate(raw)


def _candidates(config: SynthesisConfig, n: int = 2) -> list[dict]:
    pair = {"pair_id": "p1", "source": _png("red"), "target": _png("blue"), "quarantine_reason": None}
    requests = [r.to_row() for r in caption_expand(pair, n, config.sampling)]
    results = OpenAIChatClient(config.annotator).answer_many(requests)
    return [make_candidate("p1", EngineResult.from_row(r), config.annotator.model) for r in results]


def test_shipped_config_thinks_and_the_boxed_answer_becomes_the_instruction(glm_api):
    config = _config(glm_api)
    assert config.annotator.reasons() and config.sampling.max_tokens >= REASONING_TOKENS
    candidates = _candidates(config)
    assert [b["thinking"] for b in GLMStandIn.bodies] == [{"type": "enabled"}] * 2
    assert all(b["max_tokens"] == config.sampling.max_tokens for b in GLMStandIn.bodies)
    assert [c["instruction"] for c in candidates] == [ANSWER, ANSWER]  # no box tokens in an SFT target
    assert [c["finish_reason"] for c in candidates] == ["stop", "stop"]
    assert all(c["parsed"] and c["parse_error"] is None for c in candidates)


def test_thinking_switched_off_through_extra_body(glm_api):
    config = _config(glm_api, extra_body={"thinking": {"type": "disabled"}})
    assert not config.annotator.reasons()
    candidates = _candidates(config, n=1)
    assert GLMStandIn.bodies[0]["thinking"] == {"type": "disabled"}
    assert candidates[0]["instruction"] == ANSWER


def test_reply_cut_inside_reasoning_is_truncated_never_an_instruction(glm_api):
    config = _config(glm_api)
    config = config.model_copy(update={"sampling": config.sampling.model_copy(update={"max_tokens": 16})})
    (candidate,) = _candidates(config, n=1)
    assert GLMStandIn.bodies[0]["max_tokens"] == 16
    assert candidate["instruction"] is None and not candidate["parsed"]
    assert (candidate["parse_error"], candidate["finish_reason"]) == ("truncated", "length")
    assert candidate["raw_text"] == ""  # the cut reasoning arrived in reasoning_content, content was empty
