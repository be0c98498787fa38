"""The one redaction helper and the trusted-proxy client address, on their own (no servers)."""

from __future__ import annotations

import pytest

from editcaption.proxies import client_address, parse_networks
from editcaption.redaction import MASK, is_secret_name, redact, redact_text


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("postgresql+psycopg://user:S3cret-pw@db.internal:5432/review", "S3cret-pw"),
        ("could not open sqlite:///x.db?password=hunter22&mode=ro", "hunter22"),
        ("s3://bucket/p?X-Amz-Signature=abcdef123456&X-Amz-Credential=AKIAXYZ", "abcdef123456"),
        ("s3://bucket/p?X-Amz-Signature=abcdef123456&X-Amz-Credential=AKIAXYZ", "AKIAXYZ"),
        ("Authorization: Bearer ec-Zm9vYmFyYmF6cXV4", "ec-Zm9vYmFyYmF6cXV4"),
        ('{"api_key": "sk-live-123456"}', "sk-live-123456"),
        ("host=db password=pa55word user=x", "pa55word"),
        ("redis://:p@ss@w0rd@cache:6379/0", "p@ss@w0rd"),
    ],
)
def test_secrets_in_text_are_masked(text: str, secret: str) -> None:
    out = redact_text(text)
    assert secret not in out and MASK in out


@pytest.mark.parametrize(
    "text",
    [
        "missing or wrong CSRF token: reload the page and try again",
        "missing API key: send `Authorization: Bearer <key>`",
        "the Authorization header must be `Bearer <key>`",
        "this API key used its 2 requests per minute; retry later",
    ],
)
def test_prose_about_secrets_is_left_alone(text: str) -> None:
    assert redact_text(text) == text


def test_yaml_lines_with_secret_names_are_masked() -> None:
    text = "engine:\n  api_key: sk-abcdef123\n  max_tokens: 4\n- password: 'hunter2hunter'\n"
    assert redact_text(text) == "engine:\n  api_key: ***\n  max_tokens: 4\n- password: '***'\n"


def test_ordinary_text_is_left_alone() -> None:
    text = (
        "max_tokens: 48\napi_key_env: OPENAI_API_KEY\nhttp://127.0.0.1:8000/v1 key_hashes_file: keys.sha256"
    )
    assert redact_text(text) == text
    assert redact_text("postgresql+psycopg://postgres@127.0.0.1:5432/review") == (
        "postgresql+psycopg://postgres@127.0.0.1:5432/review"
    )


def test_environment_secrets_are_masked_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-planted-0123456789")
    monkeypatch.setenv("EDITCAPTION_REVIEW_STORE", "postgresql://u:env-url-pass@h/db")
    out = redact_text("engine said: bad key sk-planted-0123456789; retrying with env-url-pass")
    assert "sk-planted" not in out and "env-url-pass" not in out


def test_the_working_directory_is_no_secret(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The shell exports PWD (a name ending in 'pwd'); its value is the folder every relative path is
    under, so masking it turned `/work/run/out` into `***/out` in every report and config dump."""
    monkeypatch.setenv("PWD", str(tmp_path))
    monkeypatch.setenv("OLDPWD", str(tmp_path.parent))
    monkeypatch.setenv("DB_PWD", "planted-db-pwd-1")
    path = f"model: {tmp_path}/annotator (was in {tmp_path.parent}); db pass planted-db-pwd-1"
    assert redact_text(path) == f"model: {tmp_path}/annotator (was in {tmp_path.parent}); db pass ***"


def test_config_dumps_mask_secret_keys_and_strings() -> None:
    config = {
        "engine": {"api_key": "abcdef-123", "api_key_env": "GLM_KEY", "max_tokens": 64, "model": "m"},
        "human": {"store_url": "postgresql://a:topsecret@h/db", "password": None},
        "inputs": ["s3://b/x?sig=zzzzzz", "plain/path"],
        "secret_key": True,
    }
    out = redact(config)
    assert out["engine"] == {"api_key": MASK, "api_key_env": "GLM_KEY", "max_tokens": 64, "model": "m"}
    assert out["human"] == {"store_url": f"postgresql://a:{MASK}@h/db", "password": None}
    assert out["inputs"] == [f"s3://b/x?sig={MASK}", "plain/path"]
    assert out["secret_key"] is True
    assert config["engine"]["api_key"] == "abcdef-123"  # the input is not changed


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password", True),
        ("PGPASSWORD", True),
        ("aws_secret_access_key", True),
        ("HF_TOKEN", True),
        ("api-key", True),
        ("max_tokens", False),
        ("api_key_env", False),
        ("key_hashes_file", False),
        ("tokens_per_minute", False),
        ("PWD", False),
        ("OLDPWD", False),
        ("DB_PWD", True),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() -> None:
    none = parse_networks([])
    proxies = parse_networks(["10.0.0.0/8", "::1"])
    assert client_address("203.0.113.9", ["1.2.3.4"], none) == "203.0.113.9"
    assert client_address("203.0.113.9", ["1.2.3.4"], proxies) == "203.0.113.9"  # peer not a proxy
    # the proxy appended the address it saw; the client's own (forged) entries are to its left
    assert client_address("10.1.2.3", ["6.6.6.6, 198.51.100.7"], proxies) == "198.51.100.7"
    assert client_address("10.1.2.3", ["6.6.6.6", "198.51.100.7, 10.9.9.9"], proxies) == "198.51.100.7"
    assert client_address("::1", ["[2001:db8::5]:443"], proxies) == "2001:db8::5"
    assert client_address("10.1.2.3", [], proxies) == "10.1.2.3"
    assert client_address("10.1.2.3", ["not-an-ip"], proxies) == "10.1.2.3"
    assert client_address("::ffff:192.0.2.1", [], none) == "192.0.2.1"
    with pytest.raises(ValueError, match="not an IP address or CIDR"):
        parse_networks(["10.0.0.0/33"])
