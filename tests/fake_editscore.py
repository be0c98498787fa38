"""A stand-in for an EditScore model behind an OpenAI-compatible API, on loopback.

The real scorer is an 8B VLM on a GPU, which cannot run here, and the tiny random model cannot
produce parsable scores. This server answers EditScore prompts with scores derived from a hash of
the prompt text (the candidate instruction), so results vary across candidates, are reproducible,
and about one reply in seven is unparsable prose, as real models sometimes write.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def editscore_reply(body: dict) -> str:
    parts = [p for m in body["messages"] if isinstance(m["content"], list) for p in m["content"]]
    text = " ".join(p.get("text", "") for p in parts if p["type"] == "text")
    images = sum(p["type"] == "image_url" for p in parts)
    h = int(hashlib.sha256(text.encode()).hexdigest(), 16)
    if images == 1:  # perceptual quality: the edited image alone
        return json.dumps({"reasoning": "clean render", "score": [22, 20]})
    if h % 7 == 0:
        return "The edit looks mostly right, I would rate it fairly high."
    return "```json\n" + json.dumps({"reasoning": "checked", "score": [h % 26, (h >> 8) % 26]}) + "\n```"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        payload = json.dumps(
            {"choices": [{"message": {"content": editscore_reply(body)}}], "usage": {"completion_tokens": 12}}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        """Keep the test output free of one access-log line per request."""


@contextmanager
def fake_editscore_server() -> Iterator[str]:
    """Yield the base URL (`http://127.0.0.1:PORT/v1`) of a running stand-in; stop it after."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
        server.server_close()
