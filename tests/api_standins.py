"""Loopback stand-ins for the paid model APIs the shipped configs call, shared by the tests.

A stand-in is an OpenAI-compatible `/chat/completions` server on 127.0.0.1 that answers in the shape
the real API documents and records every request body, so a test can check what was sent. They stand
in for what cannot run here (a paid API); the engine, the job and the parsers under test are real.

- `GLMStandIn`: GLM's API for glm-4.5v. It follows the `thinking` field it receives (GLM-4.5V thinks
  unless told not to); thinking, it returns `reasoning_content` and a `content` whose answer is inside
  `<|begin_of_box|>…<|end_of_box|>`, with `finish_reason`; a `max_tokens` smaller than its reasoning
  gets the reasoning cut, an empty `content` and `finish_reason: length`.
- `JudgeStandIn`: an API judge (the eval config's Gemini through its OpenAI-compatible endpoint): a
  graded rubric JSON for judge prompts, a preference for pairwise prompts.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REASONING = (
    'The mug is at the viewer\'s left in the source and at the right in the target; "left" needs a frame.'
)
ANSWER = "Move the red mug to the viewer's right."
REASONING_TOKENS = 40  # what the GLM stand-in's reasoning costs; a smaller budget cuts it


class _ChatStandIn(BaseHTTPRequestHandler):
    """Reads the body, records it, answers with `reply(body)` -> (message, finish_reason)."""

    bodies: list[dict] = []

    def reply(self, body: dict) -> tuple[dict, str]:
        raise NotImplementedError

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        message, finish = self.reply(body)
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


class GLMStandIn(_ChatStandIn):
    """GLM's chat-completions API for glm-4.5v (see the module docstring)."""

    bodies: list[dict] = []

    def reply(self, body: dict) -> tuple[dict, str]:
        thinking = (body.get("thinking") or {}).get("type", "enabled")
        if thinking == "disabled":
            return {"role": "assistant", "content": ANSWER}, "stop"
        if body["max_tokens"] < REASONING_TOKENS:
            return {
                "role": "assistant",
                "content": "",
                "reasoning_content": REASONING[: body["max_tokens"]],
            }, "length"
        content = f"\n<|begin_of_box|>{ANSWER}<|end_of_box|>"
        return {"role": "assistant", "content": content, "reasoning_content": REASONING}, "stop"


def _text(body: dict) -> str:
    parts = [p for m in body["messages"] if isinstance(m["content"], list) for p in m["content"]]
    strings = [m["content"] for m in body["messages"] if isinstance(m["content"], str)]
    return " ".join([*strings, *(p.get("text", "") for p in parts if p.get("type") == "text")])


class JudgeStandIn(_ChatStandIn):
    """An API judge: every judged instruction gets the same sound rubric; pairwise prefers A."""

    bodies: list[dict] = []

    def reply(self, body: dict) -> tuple[dict, str]:
        text = _text(body)
        if re.search(r"<instruction_a>", text):
            content = json.dumps({"reason": "A names the side.", "preferred": "A"})
        else:
            names = ("correctness", "orientation", "viewpoint", "attributes", "conciseness")
            content = json.dumps(
                {
                    "reasoning": "Compared the instruction with both images.",
                    "scores": dict.fromkeys(names, 3),
                    "overall": 3,
                    "verdict": "minor_error",
                    "error_types": ["attribute"],
                }
            )
        return {"role": "assistant", "content": content}, "stop"


@contextmanager
def serve_standin(handler: type[_ChatStandIn]) -> Iterator[str]:
    """Run the stand-in on a free loopback port; yield its base URL (`http://127.0.0.1:PORT/v1`)."""
    handler.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
        server.server_close()
