"""Serving pieces that need no running app: configs, API keys, the URL fetcher's refusals."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from editcaption.serving.config import AuthConfig, ServeConfig, UrlFetchConfig
from editcaption.serving.security import KeyChecker, RequestRefused, fetch_image, hash_key, new_key

ROOT = Path(__file__).resolve().parents[1]


def test_config_files_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Serve config is valid for Ray's schema and for ours; auth is off only on loopback."""
    from ray.serve.schema import ServeDeploySchema

    monkeypatch.delenv("EDITCAPTION_SERVE_MODEL", raising=False)
    paths = sorted((ROOT / "serve_configs").glob("*.yaml"))
    assert {p.name for p in paths} >= {
        "captioner.yaml",
        "captioner-cpu.yaml",
        "captioner-qwen3vl-8b.yaml",
        "captioner-qwen3vl-235b-a22b.yaml",
    }
    for path in paths:
        schema = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
        for app in schema.applications:
            assert app.import_path == "editcaption.serving.app:build_app"
            cfg = ServeConfig.model_validate(app.args)
            assert cfg.url_fetch.enabled is False, path
            if cfg.auth.mode == "disabled":
                assert schema.http_options.host == "127.0.0.1", f"{path}: auth off must mean loopback only"
            captioner = next(d for d in app.deployments if d.name == "Captioner")
            assert captioner.max_ongoing_requests >= cfg.captioner.batching.max_batch_size, path
            assert captioner.max_queued_requests > 0 and captioner.backpressure_config.retry_after_s, path


def test_model_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    args = yaml.safe_load((ROOT / "serve_configs" / "captioner.yaml").read_text())["applications"][0]["args"]
    monkeypatch.setenv("EDITCAPTION_SERVE_MODEL", str(tmp_path))
    cfg = ServeConfig.model_validate(args)
    assert cfg.captioner.engine.model == str(tmp_path.resolve())
    assert cfg.served_model_id() == tmp_path.name


def test_auth_is_required_by_default_and_keys_are_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert AuthConfig().mode == "required"
    key, digest = new_key()
    assert digest == hash_key(key) and key not in digest
    keys = tmp_path / "keys"
    keys.write_text(f"# comment\n{digest}  # alice\n")
    monkeypatch.setenv("EDITCAPTION_API_KEY_HASHES", hash_key("bob"))
    checker = KeyChecker(AuthConfig(key_hashes_file=str(keys)))
    checker.check(f"Bearer {key}")
    checker.check("bearer bob")
    for header, status in [(None, 401), ("Bearer", 401), (f"Token {key}", 401), ("Bearer nope", 401)]:
        with pytest.raises(RequestRefused) as refused:
            checker.check(header)
        assert refused.value.status == status
    KeyChecker(AuthConfig(mode="disabled")).check(None)


def test_no_keys_configured_refuses_everyone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDITCAPTION_API_KEY_HASHES", raising=False)
    with pytest.raises(RequestRefused):
        KeyChecker(AuthConfig()).check("Bearer anything")


def test_malformed_key_file_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "keys"
    bad.write_text("not-a-digest\n")
    with pytest.raises(ValueError, match="sha256"):
        KeyChecker(AuthConfig(key_hashes_file=str(bad)))


def test_url_fetching_is_off_by_default() -> None:
    with pytest.raises(RequestRefused, match="disabled"):
        fetch_image("https://example.com/a.png", UrlFetchConfig(), 1000)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("http://127.0.0.1:9/a.png", "non-public"),
        ("http://localhost:9/a.png", "non-public"),
        ("http://[::1]:9/a.png", "non-public"),
        ("http://10.1.2.3/a.png", "non-public"),
        ("http://169.254.169.254/latest/meta-data", "non-public"),
        ("http://[::ffff:127.0.0.1]/a.png", "non-public"),
        ("http://example.org/a.png", "allow-list"),
        ("ftp://127.0.0.1/a.png", "http"),
        ("file:///etc/passwd", "http"),
    ],
)
def test_private_and_unlisted_urls_are_refused(url: str, match: str) -> None:
    allow = ["127.0.0.1", "localhost", "::1", "10.1.2.3", "169.254.169.254", "::ffff:127.0.0.1"]
    with pytest.raises(RequestRefused, match=match) as refused:
        fetch_image(url, UrlFetchConfig(enabled=True, allow_hosts=allow), 1000)
    assert refused.value.status == 422


def test_a_name_resolving_to_any_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS is faked (no network here): one public and one private answer must still be refused."""
    answers = [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 80)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.168.1.5", 80)),
    ]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: answers)
    with pytest.raises(RequestRefused, match="192.168.1.5"):
        fetch_image(
            "http://images.example/a.png", UrlFetchConfig(enabled=True, allow_hosts=["images.example"]), 10
        )


def test_cli_new_key_prints_only_the_digest_on_stdout() -> None:
    from typer.testing import CliRunner

    from editcaption.cli import app

    result = CliRunner().invoke(app, ["serve", "--new-key"])
    assert result.exit_code == 0
    digest = result.stdout.strip().splitlines()[-1]
    assert len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)


def test_cli_refuses_bad_configs_before_starting_ray(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from editcaption.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["serve"]).exit_code == 2
    assert runner.invoke(app, ["serve", "--config", str(tmp_path / "nope.yaml")]).exit_code == 2
    config = yaml.safe_load((ROOT / "serve_configs" / "captioner.yaml").read_text())
    config["applications"][0]["args"]["limits"]["max_candidate"] = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["serve", "--config", str(bad)])
    assert result.exit_code == 2 and "max_candidate" in result.output


class _NeverAnswered:
    """A stand-in for a `DeploymentResponse` whose engine never answers: what the deadline is for (a
    real engine that hangs cannot be arranged on demand; the Serve tests run the real one)."""

    def __init__(self) -> None:
        self.cancelled = False

    def __await__(self):
        import asyncio

        return asyncio.get_running_loop().create_future().__await__()

    def cancel(self) -> None:
        self.cancelled = True


def test_a_request_past_its_deadline_gets_504_and_its_engine_calls_are_cancelled() -> None:
    import asyncio
    import time
    from types import SimpleNamespace

    from editcaption.engines.base import EngineRequest
    from editcaption.serving.app import CaptionerAPI

    answer = CaptionerAPI.func_or_class._answer  # no Serve replica: only the deadline logic runs
    api = SimpleNamespace(config=SimpleNamespace(request_timeout_s=0.05))
    calls: list[_NeverAnswered] = []

    def remote(row: dict) -> _NeverAnswered:
        calls.append(_NeverAnswered())
        return calls[-1]

    handle = SimpleNamespace(answer=SimpleNamespace(remote=remote))
    requests = [EngineRequest(request_id=str(i), images=[], messages=[]) for i in range(2)]
    started = time.monotonic()
    with pytest.raises(RequestRefused) as refused:
        asyncio.run(answer(api, handle, requests, deadline=started + 0.05))
    assert refused.value.status == 504 and "request_timeout_s=0.05" in refused.value.reason
    assert len(calls) == 2 and all(c.cancelled for c in calls)
    assert time.monotonic() - started < 2


class _Recorded:
    """A finished engine call: the row the engine answered for `request`."""

    def __init__(self, row: dict) -> None:
        self.row = row

    def __await__(self):
        yield from []
        return self.row

    def cancel(self) -> None:  # pragma: no cover - only a deadline cancels
        pass


def _engine_handle(answer, seen: list[dict]):
    """A stand-in for an engine deployment's handle (no Ray here) answering each row with `answer(row)`."""
    from types import SimpleNamespace

    def remote(row: dict) -> _Recorded:
        seen.append(row)
        return _Recorded({**row, **answer(row)})

    return SimpleNamespace(answer=SimpleNamespace(remote=remote))


def _request(path: str, body: bytes):
    from starlette.requests import Request

    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 5000),
        "query_string": b"",
    }
    return Request(scope, receive)


def _serve_config(scorer: str) -> ServeConfig:
    engine = {"backend": "vllm", "device": "cpu", "max_model_len": 2048}
    return ServeConfig.model_validate(
        {
            "model_id": "tiny",
            "captioner": {"engine": {**engine, "model": "Qwen/Qwen3-VL-8B-Thinking"}},
            "scorer": {"engine": {**engine, "model": scorer}},
            "auth": {"mode": "disabled"},
            "limits": {"images": {"reject_identical": False}},
        }
    )


def test_serve_asks_and_reads_each_family_as_the_pipeline_does() -> None:
    """The ingress alone (engine handles are stand-ins: no Ray, no model): an EditScore-7B scorer gets
    its `<img1>: ` labels like synthesis sends them, a Qwen3-VL Thinking captioner's reply (its template
    opens `<think>`, so the reply holds only `</think>`) is read without its reasoning, and the chat
    route's finish_reason is the engine's own."""
    import asyncio
    import base64
    import io
    import json

    import numpy as np
    from PIL import Image

    from editcaption.serving.app import CaptionerAPI

    ingress = CaptionerAPI.func_or_class.__mro__[1]  # the class as written, without Serve's ASGI wrapper

    def png(seed: int) -> str:
        pixels = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode()

    captioned, scored = [], []
    reply = {"text": "The model weighs it.</think>Move the cup left.", "num_output_tokens": 9}
    captioner = _engine_handle(lambda row: {**reply, "finish_reason": "stop", "error": None}, captioned)
    score_text = '{"reasoning": "fine", "score": [8, 7]}'  # EditScore's two sub-scores
    scorer = _engine_handle(
        lambda row: {"text": score_text, "num_output_tokens": 9, "finish_reason": "stop", "error": None},
        scored,
    )
    api = ingress(_serve_config("EditScore/EditScore-7B"), captioner, scorer)
    body = json.dumps({"source": png(1), "target": png(2), "score": True}).encode()
    answer = asyncio.run(api.instructions(_request("/v1/instructions", body)))
    assert answer.candidates[0].instruction == "Move the cup left."
    texts = [json.dumps(row["messages"]) for row in scored]
    assert scored and all("<img1>: " in t for t in texts) and any("<img2>: " in t for t in texts)
    assert answer.candidates[0].score.overall is not None  # read as the pipeline reads it

    plain = ingress(_serve_config("/models/editscore-qwen3-vl-8b"), captioner, scorer)
    scored.clear()
    asyncio.run(plain.instructions(_request("/v1/instructions", body)))
    assert scored and not any("<img1>" in json.dumps(row["messages"]) for row in scored)

    # exactly max_tokens long but ended by the model: the engine says stop, and so does the chat reply
    chat = {"model": "tiny", "max_tokens": 9, "messages": [{"role": "user", "content": "Describe."}]}
    completion = asyncio.run(
        api.chat_completions(_request("/v1/chat/completions", json.dumps(chat).encode()))
    )
    assert completion.choices[0].finish_reason == "stop"
