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
