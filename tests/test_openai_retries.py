"""Retry, backoff and error handling of the OpenAI-compatible client.

A paid API cannot be called here, so a scripted HTTP server on loopback stands in for one: it answers
with the status codes a rate-limited or failing provider sends. The real-server path is tested
against `vllm serve` in test_engines.py.
"""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pytest
from PIL import Image

from editcaption.engines import EngineRequest, OpenAIEngineConfig, SamplingSettings
from editcaption.engines.openai_engine import OpenAIChatClient
from editcaption.prompts.instruction import instruction_messages


class ScriptedAPI(BaseHTTPRequestHandler):
    """Answers POST /v1/chat/completions with the next status in `script` (200 once it runs out)."""

    script: list[int] = []
    bodies: list[dict] = []
    headers_seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        type(self).headers_seen.append(dict(self.headers))
        status = type(self).script.pop(0) if type(self).script else 200
        if status == 200:
            payload = {
                "choices": [{"message": {"content": "Move the red circle to the viewer's left."}}],
                "usage": {"completion_tokens": 9},
            }
        else:
            payload = {"error": {"message": f"scripted {status}"}}
        data = json.dumps(payload).encode()
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        """Keep the test output free of one access-log line per request."""


@pytest.fixture
def api():
    ScriptedAPI.script, ScriptedAPI.bodies, ScriptedAPI.headers_seen = [], [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


def _row() -> dict:
    def png(colour: str) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (64, 48), colour).save(buf, format="PNG")
        return buf.getvalue()

    return EngineRequest(
        request_id="r1",
        images=[png("red"), png("blue")],
        messages=instruction_messages(),
        sampling=SamplingSettings(max_tokens=20, seed=7),
    ).to_row()


def _client(base_url: str, **kw) -> OpenAIChatClient:
    return OpenAIChatClient(
        OpenAIEngineConfig(base_url=base_url, model="glm-test", backoff_s=0.01, timeout_s=5, **kw)
    )


def test_retries_rate_limits_and_server_errors(api, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    ScriptedAPI.script = [429, 503, 500]
    out = _client(api, max_retries=3)(pa.Table.from_pylist([_row()]))
    assert out["error"] == [None]
    assert out["text"] == ["Move the red circle to the viewer's left."]
    assert out["num_output_tokens"] == [9]
    assert len(ScriptedAPI.bodies) == 4
    body = ScriptedAPI.bodies[-1]
    parts = body["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert all(p["image_url"]["url"].startswith("data:image/png;base64,") for p in parts[:2])
    assert body["seed"] == 7 and body["max_tokens"] == 20 and body["model"] == "glm-test"
    assert ScriptedAPI.headers_seen[-1]["Authorization"] == "Bearer sk-test"


def test_gives_up_after_max_retries_with_the_last_error(api):
    ScriptedAPI.script = [503] * 10
    out = _client(api, max_retries=2, api_key_env=None)(pa.Table.from_pylist([_row()]))
    assert out["text"] == [None]
    assert "gave up after 3 attempts" in out["error"][0] and "HTTP 503" in out["error"][0]
    assert len(ScriptedAPI.bodies) == 3


def test_client_errors_are_not_retried(api):
    ScriptedAPI.script = [400]
    out = _client(api, max_retries=5, api_key_env=None)(pa.Table.from_pylist([_row()]))
    assert out["error"][0].startswith("HTTP 400") and len(ScriptedAPI.bodies) == 1


def test_unreachable_server_is_an_error_row_not_a_crash():
    out = _client("http://127.0.0.1:9/v1", max_retries=1, api_key_env=None)(pa.Table.from_pylist([_row()]))
    assert out["text"] == [None] and "ConnectError" in out["error"][0]
