"""The review app under attack, over HTTP (uvicorn in a thread, SQLite): password guessing is throttled
per account and per client address (429 + Retry-After) and the lock ends on its own or by `user unlock`
(the app runs on a clock the test moves, so a window passes without waiting and a slow machine cannot
let failures expire early);
X-Forwarded-For counts only from a trusted proxy; sessions are server-side (no fixation, logout and
password changes end them); and every audited action lands in the audit table and its JSON lines.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher
from review_servers import running_app, write_review_queue
from typer.testing import CliRunner

from editcaption.cli import app as cli
from editcaption.review.app import COOKIE, ReviewAppConfig
from editcaption.review.cli import parse_since
from editcaption.review.store import LoginLimits, Store

pytestmark = pytest.mark.slow  # servers on loopback
CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # argon2 at a test-friendly cost
WINDOW_S = 900.0
USERS = {"alice": "alice-password", "bob": "bob-password", "carol": "carol-password", "root": "root-password"}


class Clock:
    """UTC time that moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _cli(*args: str, input: str | None = None) -> str:
    result = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'review.db'}"
    with Store(url, hasher=CHEAP) as store:
        for name, password in USERS.items():
            store.add_user(name, password, admin=name == "root")
    return url


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def base(store_url: str, clock: Clock) -> Iterator[str]:
    limits = LoginLimits(max_failures_per_account=5, max_failures_per_address=12, window_s=WINDOW_S)
    with running_app(ReviewAppConfig(store=store_url, login_limits=limits), clock=clock) as url:
        yield url


def _client(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"accept": "application/json"}, timeout=60)


def _login(client: httpx.Client, name: str, password: str, **headers: str) -> httpx.Response:
    token = client.get("/login").json()["csrf_token"]
    return client.post(
        "/login", data={"name": name, "password": password, "csrf_token": token}, headers=headers
    )


def test_twenty_wrong_passwords_get_429_before_the_tenth_and_the_lock_ends_with_the_window(
    base: str, clock: Clock
) -> None:
    with _client(base) as client:
        replies = [_login(client, "alice", f"guess-{i}") for i in range(20)]
        codes = [r.status_code for r in replies]
        assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}, codes
        assert 1 <= int(replies[-1].headers["retry-after"]) <= WINDOW_S
        assert "Too many failed logins for this account" in replies[-1].json()["error"]
        locked = _login(client, "alice", USERS["alice"])  # the right password is refused unchecked
        assert locked.status_code == 429
        assert _login(client, "bob", USERS["bob"]).status_code == 200  # other accounts are not locked
        clock.advance(int(locked.headers["retry-after"]) - 2)
        assert _login(client, "alice", USERS["alice"]).status_code == 429  # not yet
        clock.advance(2)
        assert _login(client, "alice", USERS["alice"]).status_code == 200


def test_one_address_guessing_many_accounts_is_throttled_and_forged_forwarding_does_not_help(
    base: str, store_url: str
) -> None:
    with _client(base) as client:
        codes = [_login(client, name, "wrong-password").status_code for name in ("alice", "bob", "carol") * 4]
        assert codes == [401] * 12  # 4 per account, under the account limit; 12 from this address
        refused = _login(client, "root", USERS["root"], **{"X-Forwarded-For": "198.51.100.77"})
        assert refused.status_code == 429 and "from your address" in refused.json()["error"]
        _cli("review", "user", "unlock", "--store", store_url, "--address", "127.0.0.1")
        assert _login(client, "root", USERS["root"]).status_code == 200
    with Store(store_url) as store:
        refusal = store.audit_entries(action="login.refused")[-1]
    assert refusal["address"] == "127.0.0.1" and refusal["detail"]["scope"] == "address"


def test_forwarded_for_is_believed_from_a_trusted_proxy_only(store_url: str, clock: Clock) -> None:
    limits = LoginLimits(max_failures_per_account=50, max_failures_per_address=3, window_s=60)
    config = ReviewAppConfig(store=store_url, login_limits=limits, trusted_proxies=["127.0.0.0/8"])
    with running_app(config, clock=clock) as base, _client(base) as client:
        behind = {"X-Forwarded-For": "6.6.6.6, 198.51.100.1"}  # a forged entry, then what the proxy saw
        assert [_login(client, "bob", "nope-nope", **behind).status_code for _ in range(4)] == [401] * 3 + [
            429
        ]
        assert _login(client, "bob", USERS["bob"], **{"X-Forwarded-For": "198.51.100.2"}).status_code == 200
    with Store(store_url) as store:
        addresses = {e["address"] for e in store.audit_entries(action="login")}
    assert addresses == {"198.51.100.1", "198.51.100.2"}


def test_sessions_are_new_at_login_and_end_on_logout_and_password_change(base: str, store_url: str) -> None:
    with _client(base) as first, _client(base) as second:
        first.get("/login")
        before = first.cookies[COOKIE]
        assert _login(first, "alice", USERS["alice"]).status_code == 200
        assert first.cookies[COOKIE] != before
        planted = _client(base)  # a cookie handed out before login stays logged out (no fixation)
        planted.cookies.set(COOKIE, before)
        assert planted.get("/queue").status_code == 401
        planted.close()

        assert _login(second, "alice", USERS["alice"]).status_code == 200
        stolen = second.cookies[COOKIE]
        token = second.get("/login").json()["csrf_token"]
        assert second.post("/logout", data={"csrf_token": token}).status_code == 200
        with _client(base) as thief:
            thief.cookies.set(COOKIE, stolen)
            assert thief.get("/queue").status_code == 401  # logged out on the server, not just in the browser

        assert _login(second, "alice", USERS["alice"]).status_code == 200
        token = first.get("/login").json()["csrf_token"]
        form = {"current": USERS["alice"], "new": "alice-new-password", "repeat": "alice-new-password"}
        wrong = first.post("/password", data={**form, "current": "not-it-at-all", "csrf_token": token})
        assert wrong.status_code == 403
        changed = first.post("/password", data={**form, "csrf_token": token})
        assert changed.status_code == 200, changed.text
        assert first.get("/queue").status_code == 200  # this session goes on, with a new token
        assert second.get("/queue").status_code == 401  # the other one ended
        assert _login(second, "alice", USERS["alice"]).status_code == 401
        assert _login(second, "alice", "alice-new-password").status_code == 200

        with Store(store_url, hasher=CHEAP) as store:  # what `review user add --replace` does
            store.add_user("alice", "reset-by-admin", replace=True)
        assert first.get("/queue").status_code == 401 and second.get("/queue").status_code == 401
    with Store(store_url) as store:
        actions = [(e["action"], e["actor"]) for e in store.audit_entries() if e["target"] == "alice"]
    assert ("password.change", "alice") in actions and actions[-1][0] == "user.password_reset"


def test_every_audited_action_is_in_the_table_and_the_json_lines(
    store_url: str, tmp_path: Path, clock: Clock
) -> None:
    run = tmp_path / "run"
    write_review_queue(run / "review_queue.parquet", 3)
    _cli(
        "review",
        "import",
        "--store",
        store_url,
        "--from",
        str(run),
        "--kind",
        "judge",
        "--annotators",
        "carol",
    )
    limits = LoginLimits(max_failures_per_account=5, max_failures_per_address=50, window_s=600)
    config = ReviewAppConfig(store=store_url, login_limits=limits)
    with (
        running_app(config, clock=clock) as base,
        _client(base) as carol,
        _client(base) as root,
        _client(base) as guesser,
    ):
        assert _login(carol, "carol", "wrong-password").status_code == 401
        assert _login(carol, "carol", USERS["carol"]).status_code == 200
        token = carol.get("/login").json()["csrf_token"]
        for aid in carol.get("/queue", params={"kind": "judge"}).json()["pending"]:
            carol.post(f"/task/{aid}", data={"verdict": "correct", "csrf_token": token})
        carol.post("/logout", data={"csrf_token": token})
        assert _login(root, "root", USERS["root"]).status_code == 200
        assert root.get("/admin/export", params={"kind": "judgment", "format": "jsonl"}).status_code == 200
        assert [_login(guesser, "bob", "guess-guess").status_code for _ in range(6)] == [401] * 5 + [429]
        _cli("review", "user", "unlock", "bob", "--store", store_url)
        assert _login(guesser, "bob", USERS["bob"]).status_code == 200
    _cli("review", "export", "--store", store_url, "--kind", "judgment", "--out", str(tmp_path / "j.parquet"))
    _cli(
        "review",
        "labelstudio",
        "export",
        "--store",
        store_url,
        "--kind",
        "judge",
        "--out",
        str(tmp_path / "ls"),
    )
    (tmp_path / "ls.json").write_text("[]")
    _cli("review", "labelstudio", "import", "--store", store_url, "--from", str(tmp_path / "ls.json"))

    lines = _cli("review", "audit", "--store", store_url, "--json").splitlines()
    entries = [json.loads(line) for line in lines]
    seen = {(e["action"], e["target"]) for e in entries}
    expected = {
        ("user.add", "carol"),
        ("import", "run"),
        ("login.failure", "carol"),
        ("login.success", "carol"),
        ("logout", "carol"),
        ("login.success", "root"),
        ("export", "judgment"),
        ("login.failure", "bob"),
        ("login.refused", "bob"),
        ("user.unlock", "bob"),
        ("login.success", "bob"),
        ("labelstudio.export", "judge"),
        ("labelstudio.import", None),
    }
    assert expected <= seen, expected - seen
    imported = next(e for e in entries if e["action"] == "import")
    assert (
        imported["rows"] == 3
        and imported["detail"]["kind"] == "judge"
        and imported["actor"].startswith("cli:")
    )
    web_export, cli_export = (e for e in entries if e["action"] == "export")
    assert (web_export["actor"], web_export["address"], web_export["rows"]) == ("root", "127.0.0.1", 3)
    assert cli_export["rows"] == 3 and cli_export["detail"]["format"] == "parquet"
    assert all(e["address"] == "127.0.0.1" for e in entries if e["action"].startswith("login"))
    assert not any(
        "password" in json.dumps(e["detail"] or {}) for e in entries if e["action"] != "login.failure"
    )

    jsonl = [json.loads(line) for line in (tmp_path / "review.audit.jsonl").read_text().splitlines()]
    assert jsonl == entries  # the JSON-lines copy holds exactly what the table holds

    assert _cli("review", "audit", "--store", store_url, "--since", "1h", "--json").splitlines() == lines
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    assert _cli("review", "audit", "--store", store_url, "--since", later, "--json") == ""
    logins = _cli("review", "audit", "--store", store_url, "--action", "login.", "--json").splitlines()
    assert {json.loads(x)["action"] for x in logins} == {"login.success", "login.failure", "login.refused"}
    table = _cli("review", "audit", "--store", store_url, "--limit", "3")
    assert "Audit log" in table and "labelstudio.import" in table and "user.add" not in table


def test_since_parsing() -> None:
    now = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("2d", now) == now - timedelta(days=2)
    assert parse_since("2026-01-01T08:00") == datetime(2026, 1, 1, 8, tzinfo=UTC)
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_since("yesterday")
