"""GLM through its OpenAI-compatible API: the `thinking` field goes out, `reasoning_content`, `content`
and `finish_reason` come back and end up where the parsers see them.

GLM's API is paid and unreachable from here, so `GLMStandIn` stands in for it on loopback: it answers in
the shape GLM's API documents for glm-4.5v (choices[0].message with `reasoning_content` and a `content`
whose answer is inside <|begin_of_box|>…<|end_of_box|>, choices[0].finish_reason, usage), follows the
`thinking` field it receives, and records every request body so the test can check what was sent.
"""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from PIL import Image

from editcaption.engines import EngineResult
from editcaption.engines.openai_engine import OpenAIChatClient
from editcaption.synthesis.job import SynthesisConfig, caption_expand, make_candidate

CONFIG = Path(__file__).resolve().parents[1] / "ray_jobs" / "configs" / "synthesis-glm-api.yaml"
REASONING = (
    'The mug is at the viewer\'s left in the source and at the right in the target; "left" needs a frame.'
)
ANSWER = "Move the red mug to the viewer's right."
REASONING_TOKENS = 40  # what the stand-in's reasoning costs; a smaller budget cuts it


class GLMStandIn(BaseHTTPRequestHandler):
    """A stand-in for GLM's paid chat-completions API (see the module docstring)."""

    bodies: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        thinking = (body.get("thinking") or {}).get("type", "enabled")  # GLM-4.5V thinks unless told not to
        if thinking == "disabled":
            message, finish = {"role": "assistant", "content": ANSWER}, "stop"
        elif body["max_tokens"] < REASONING_TOKENS:
            message = {
                "role": "assistant",
                "content": "",
                "reasoning_content": REASONING[: body["max_tokens"]],
            }
            finish = "length"
        else:
            content = f"\n<|begin_of_box|>{ANSWER}<|end_of_box|>"
            message, finish = (
                {"role": "assistant", "content": content, "reasoning_content": REASONING},
                "stop",
            )
        payload = json.dumps(
            {
                "id": f"chatcmpl-{len(type(self).bodies)}",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 900, "completion_tokens": 52, "total_tokens": 952},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        """Keep the test output free of one access-log line per request."""


@pytest.fixture
def glm_api(monkeypatch):
    GLMStandIn.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), GLMStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("GLM_API_KEY", "test-key")
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


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
