"""The review app over HTTP (uvicorn in a thread) and the `editcaption review` commands.

One app per module on a SQLite store filled by the real CLI: `user add`, `import` from a synthesis
output folder. Covers the safety rules (login, ownership, admin pages, CSRF, path traversal, bad
fields → 4xx with a reason), then export, stats and the Label Studio round trip through the CLI.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from review_servers import running_app, write_review_queue
from typer.testing import CliRunner

from editcaption.cli import app as cli
from editcaption.review.app import ReviewAppConfig
from editcaption.review.exports import item_images
from editcaption.review.store import NewItem, Store

pytestmark = pytest.mark.slow  # every test here talks to the app served by uvicorn
PAIRS = 6
PASSWORDS = {"alice": "alice-password", "bob": "bob-password", "root": "root-password"}


def _cli(*args: str, input: str | None = None) -> str:
    result = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("review-app")
    store = f"sqlite:///{root / 'review.db'}"
    data = root / "data"
    (data / "imgs").mkdir(parents=True)
    run = root / "runs" / "demo"
    write_review_queue(run / "review_queue.parquet", PAIRS)
    (data / "imgs" / "ok.png").write_bytes(
        pq.read_table(run / "review_queue.parquet").column("source")[0].as_py()
    )
    (data / "notes.txt").write_text("not an image")
    outside = root / "secret.png"
    outside.write_bytes(b"\x89PNG\r\n\x1a\nsecret")
    os.symlink(outside, data / "imgs" / "escape.png")
    for name, password in PASSWORDS.items():
        extra = ["--admin"] if name == "root" else []
        _cli(
            "review", "user", "add", name, "--store", store, "--password-stdin", *extra, input=password + "\n"
        )
    for kind in ("refine", "prefer", "judge"):
        out = _cli("review", "import", "--store", store, "--from", str(run), "--kind", kind, "--assign", "2")
        assert f"{PAIRS} {kind} items ({PAIRS} new), {2 * PAIRS} new assignments" in out
    with running_app(ReviewAppConfig(store=store, data=data)) as base:
        sessions = {name: _login(base, name) for name in PASSWORDS}  # argon2 is slow on purpose: log in once
        yield {"store": store, "base": base, "data": data, "run": run, "root": root, "sessions": sessions}
        for client, _ in sessions.values():
            client.close()


def _login(base: str, name: str, password: str | None = None) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=base, headers={"accept": "application/json"}, timeout=60)
    token = client.get("/login").json()["csrf_token"]
    password = PASSWORDS[name] if password is None else password
    reply = client.post("/login", data={"name": name, "password": password, "csrf_token": token})
    assert reply.status_code == 200, reply.text
    return client, reply.json()["csrf_token"]


def _queue(client: httpx.Client, kind: str) -> list[int]:
    return client.get("/queue", params={"kind": kind}).json()["pending"]


def test_reimport_adds_nothing(world: dict) -> None:
    out = _cli("review", "import", "--store", world["store"], "--from", str(world["run"]), "--kind", "judge")
    assert f"{PAIRS} judge items (0 new), 0 new assignments" in out


def test_wrong_password_and_unknown_user_are_refused(world: dict) -> None:
    with httpx.Client(base_url=world["base"], timeout=60) as client:  # argon2 at full cost, on busy CI cores
        page = client.get("/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        for name, password in (("alice", "not-her-password"), ("mallory", "whatever-pass")):
            reply = client.post("/login", data={"name": name, "password": password, "csrf_token": token})
            assert reply.status_code == 401
            assert "Wrong name or password" in reply.text
        assert client.get("/", follow_redirects=False).headers["location"] == "/login"
        assert client.get("/queue", headers={"accept": "application/json"}).status_code == 401


def test_login_needs_csrf(world: dict) -> None:
    with httpx.Client(base_url=world["base"], headers={"accept": "application/json"}) as client:
        client.get("/login")
        reply = client.post("/login", data={"name": "alice", "password": PASSWORDS["alice"]})
        assert reply.status_code == 403
        assert "CSRF" in reply.json()["error"]


def test_annotator_sees_and_changes_only_own_tasks(world: dict) -> None:
    alice, a_token = world["sessions"]["alice"]
    bob, _ = world["sessions"]["bob"]
    theirs = _queue(bob, "judge")[0]
    assert bob.get(f"/task/{theirs}").status_code == 200
    for reply in (
        alice.get(f"/task/{theirs}"),
        alice.get(f"/task/{theirs}/image/source"),
        alice.post(f"/task/{theirs}", data={"verdict": "correct", "action": "reject", "csrf_token": a_token}),
        alice.post(f"/task/{theirs}/skip", data={"csrf_token": a_token}),
    ):
        assert reply.status_code == 404
        assert "assigned to you" in reply.json()["error"]
    with Store(world["store"]) as store:
        assert store.task(store.user_id("bob"), theirs).status == "pending"


def test_admin_pages_are_for_admins(world: dict) -> None:
    alice, _ = world["sessions"]["alice"]
    for path in ("/admin", "/admin/stats.json", "/admin/export?kind=judgment"):
        reply = alice.get(path)
        assert reply.status_code == 403
        assert "admins only" in reply.json()["error"]
    root, _ = world["sessions"]["root"]
    assert root.get("/admin", headers={"accept": "text/html"}).status_code == 200
    assert "agreement" in root.get("/admin/stats.json").json()


def test_csrf_missing_or_wrong_is_refused(world: dict) -> None:
    alice, token = world["sessions"]["alice"]
    aid = _queue(alice, "judge")[0]
    answer = {"verdict": "correct"}
    assert alice.post(f"/task/{aid}", data=answer).status_code == 403
    assert alice.post(f"/task/{aid}", data={**answer, "csrf_token": "forged"}).status_code == 403
    assert (
        alice.post(f"/task/{aid}", data=answer, headers={"x-csrf-token": token[:-1] + "x"}).status_code == 403
    )
    _, bobs_token = world["sessions"]["bob"]
    assert alice.post(f"/task/{aid}", data={**answer, "csrf_token": bobs_token}).status_code == 403
    assert alice.post("/undo").status_code == 403
    assert aid in _queue(alice, "judge")  # nothing was stored


@pytest.mark.parametrize(
    "path",
    [
        "/data/..%2Fsecret.png",
        "/data/imgs/..%2F..%2Fsecret.png",
        "/data/%2e%2e/secret.png",
        "/data/%2Fetc%2Fpasswd",
        "/data/%2Fetc%2Fhostname.png",
        "/data/imgs/escape.png",
        "/data/notes.txt",
        "/data/imgs/ok.png%00.txt",
        "/data/imgs%5C..%5C..%5Csecret.png",
    ],
)
def test_path_traversal_is_refused(world: dict, path: str) -> None:
    alice, _ = world["sessions"]["alice"]
    reply = alice.get(httpx.URL(world["base"] + path))
    assert 400 <= reply.status_code < 500
    assert b"secret" not in reply.content


def test_data_folder_images_are_served(world: dict) -> None:
    alice, _ = world["sessions"]["alice"]
    reply = alice.get("/data/imgs/ok.png")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "image/png"
    assert alice.get("/data/imgs/missing.png").status_code == 404


@pytest.mark.parametrize(
    ("kind", "fields", "reason"),
    [
        ("judge", {"verdict": "great"}, "verdict"),
        ("judge", {"verdict": "critical_error"}, "needs at least one error type"),
        ("judge", {"verdict": "correct", "error_types": ["orientation"]}, "cannot carry error types"),
        ("judge", {"verdict": "minor_error", "error_types": ["colour"]}, "error_types"),
        ("prefer", {"chosen": "c", "error_type": "other", "severity": "minor"}, "chosen"),
        ("prefer", {"chosen": "a", "error_type": "other"}, "severity"),
        ("refine", {"action": "accept", "instruction": "   "}, "non-empty instruction"),
        ("refine", {"action": "accept", "instruction": "x" * 5000}, "instruction"),
        (
            "refine",
            {"action": "accept", "instruction": "ok", "fixed": ["orientation", "orientation"]},
            "twice",
        ),
    ],
)
def test_bad_answers_get_422_with_reason(world: dict, kind: str, fields: dict, reason: str) -> None:
    alice, token = world["sessions"]["alice"]
    aid = _queue(alice, kind)[0]
    reply = alice.post(f"/task/{aid}", data={**fields, "csrf_token": token})
    assert reply.status_code == 422
    assert reason in reply.json()["error"]
    html = alice.post(f"/task/{aid}", data={**fields, "csrf_token": token}, headers={"accept": "text/html"})
    assert html.status_code == 422 and "Request refused" in html.text
    assert aid in _queue(alice, kind)


def test_bad_urls_get_4xx(world: dict) -> None:
    alice, _ = world["sessions"]["alice"]
    assert alice.get("/task/not-a-number").status_code == 422
    assert alice.get("/next", params={"kind": "paint"}).status_code == 422
    assert alice.get(f"/task/{_queue(alice, 'judge')[0]}/image/middle").status_code == 400
    assert alice.get("/no-such-page").status_code == 404


def test_skip_undo_and_requeue(world: dict) -> None:
    bob, token = world["sessions"]["bob"]
    first, second = _queue(bob, "refine")[:2]
    assert bob.post(f"/task/{first}/skip", data={"csrf_token": token}).json()["next"] == "/next?kind=refine"
    assert first not in _queue(bob, "refine")
    reply = bob.post(f"/task/{second}", data={"action": "reject", "csrf_token": token})
    assert reply.json()["result"] == {"action": "reject", "instruction": "", "fixed": []}
    assert bob.post("/undo", data={"csrf_token": token}).json()["undone"] == second
    assert second in _queue(bob, "refine")
    assert bob.post("/requeue-skipped", data={"csrf_token": token}).json()["requeued"] == 1
    assert _queue(bob, "refine")[:2] == [first, second]


def test_export_stats_and_labelstudio_round_trip(world: dict, tmp_path: Path) -> None:
    """Answers given through HTTP come out of every export exactly; Label Studio answers come back in."""
    store = world["store"]
    alice, a_tok = world["sessions"]["alice"]
    root, _ = world["sessions"]["root"]
    refine, prefer, judge = (_queue(alice, k) for k in ("refine", "prefer", "judge"))
    alice.post(f"/task/{refine[0]}", data={"action": "accept", "instruction": "Move the square right.",
                                            "fixed": ["orientation"], "csrf_token": a_tok})  # fmt: skip
    alice.post(f"/task/{refine[1]}", data={"action": "reject", "csrf_token": a_tok})
    alice.post(f"/task/{prefer[0]}", data={"chosen": "b", "error_type": "orientation", "severity": "critical",
                                            "csrf_token": a_tok})  # fmt: skip
    for aid, verdict in zip(judge[:3], ("correct", "minor_error", "critical_error"), strict=True):
        types = [] if verdict == "correct" else ["viewpoint"]
        alice.post(f"/task/{aid}", data={"verdict": verdict, "error_types": types, "csrf_token": a_tok})

    sft = tmp_path / "sft.parquet"
    _cli("review", "export", "--store", store, "--kind", "sft", "--out", str(sft))
    rows = pq.read_table(sft).to_pylist()
    texts = [m["content"][-1]["text"] for r in rows for m in r["messages"] if m["role"] == "assistant"]
    assert texts == ["Move the square right."]
    assert len(rows[0]["images"]) == 2 and rows[0]["images"][0]["bytes"].startswith(b"\x89PNG")

    sft_jsonl = tmp_path / "sft.jsonl"
    _cli("review", "export", "--store", store, "--kind", "sft", "--out", str(sft_jsonl))
    (record,) = [json.loads(line) for line in sft_jsonl.read_text().splitlines()]
    assert record["origin"] == "human" and record["model"] == "human:alice"
    assert base64.b64decode(record["source"]).startswith(b"\x89PNG")

    prefs = tmp_path / "preference.parquet"
    _cli("review", "export", "--store", store, "--kind", "preference", "--out", str(prefs))
    (pref,) = pq.read_table(prefs).to_pylist()
    with Store(store) as s:
        task = s.task(s.user_id("alice"), prefer[0])
    assert (
        pref["chosen"] == task.payload["instruction_b"] and pref["rejected"] == task.payload["instruction_a"]
    )
    assert (pref["error_type"], pref["severity"], pref["annotators"], pref["agreement"]) == (
        "orientation", "critical", ["alice"], 1.0,
    )  # fmt: skip

    verdicts = tmp_path / "judgment.jsonl"
    _cli("review", "export", "--store", store, "--kind", "judgment", "--out", str(verdicts))
    got = [json.loads(line) for line in verdicts.read_text().splitlines()]
    assert sorted((j["verdict"], tuple(j["error_types"])) for j in got) == [
        ("correct", ()), ("critical_error", ("viewpoint",)), ("minor_error", ("viewpoint",)),
    ]  # fmt: skip
    assert {j["judge"] for j in got} == {"human:alice"}

    # the browser's export button serves the same bytes as the CLI
    download = root.get("/admin/export", params={"kind": "judgment", "format": "jsonl"})
    assert download.status_code == 200 and download.text == verdicts.read_text()
    assert root.get("/admin/export", params={"kind": "judgment", "format": "csv"}).status_code == 422

    stats = json.loads(_cli("review", "stats", "--store", store, "--json"))
    assert stats["human_eval"]["by_model"]["tiny-annotator"]["counts"] == {
        "correct": 1, "minor_error": 1, "critical_error": 1,
    }  # fmt: skip
    assert "Agreement" in _cli("review", "stats", "--store", store)

    # Label Studio: export judge tasks, answer the same items as bob in LS's export shape, import
    ls_dir = tmp_path / "ls"
    _cli("review", "labelstudio", "export", "--store", store, "--kind", "judge", "--out", str(ls_dir))
    assert '<Choices name="verdict" toName="judged"' in (ls_dir / "config.xml").read_text()
    tasks = json.loads((ls_dir / "tasks.json").read_text())
    assert len(tasks) == PAIRS and tasks[0]["data"]["source"].startswith("data:image/png;base64,")
    annotated = []
    for n, t in enumerate(tasks[:3]):
        verdict = ("correct", "minor_error", "critical_error")[n]
        result = [
            {"from_name": "verdict", "to_name": "judged", "type": "choices", "value": {"choices": [verdict]}}
        ]
        if verdict != "correct":
            result.append({"from_name": "error_types", "to_name": "judged", "type": "choices",
                           "value": {"choices": ["orientation", "attribute"]}})  # fmt: skip
        annotated.append({"id": n + 1, "data": t["data"], "annotations": [
            {"id": 100 + n, "completed_by": {"id": 7, "email": "bob@example.org"}, "result": result,
             "was_cancelled": False, "ground_truth": False, "lead_time": 3.2},
            {"id": 200 + n, "completed_by": 9, "result": [], "was_cancelled": True},
        ]})  # fmt: skip
    annotated.append({"id": 99, "data": {"image": "x.png"}, "annotations": []})
    export_file = tmp_path / "ls-export.json"
    export_file.write_text(json.dumps(annotated))
    out = _cli("review", "labelstudio", "import", "--store", store, "--from", str(export_file))
    assert "stored 3 annotations" in out and "cancelled" in out
    bob_verdicts = tmp_path / "after-ls.parquet"
    _cli("review", "export", "--store", store, "--kind", "judgment", "--out", str(bob_verdicts))
    from_bob = sorted(
        (r["verdict"], tuple(r["error_types"]))
        for r in pq.read_table(bob_verdicts).to_pylist()
        if r["judge"] == "human:bob"
    )
    assert from_bob == [
        ("correct", ()),
        ("critical_error", ("orientation", "attribute")),
        ("minor_error", ("orientation", "attribute")),
    ]
    stats = json.loads(_cli("review", "stats", "--store", store, "--json"))
    assert stats["agreement"]["judge"]["items_with_2plus"] >= 1


def test_user_add_refuses_argv_passwords_and_bad_names(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'u.db'}"
    result = CliRunner().invoke(
        cli, ["review", "user", "add", "x/y", "--store", store, "--password-stdin"], input="long-enough\n"
    )
    assert result.exit_code == 2 and "user name" in result.output
    result = CliRunner().invoke(cli, ["review", "user", "add", "ann", "--store", store, "--password", "p"])
    assert result.exit_code != 0
    result = CliRunner().invoke(
        cli,
        ["review", "user", "add", "ann", "--store", store],
        env={"EDITCAPTION_REVIEW_PASSWORD": "from-the-env"},
    )
    assert result.exit_code == 0
    with Store(store) as s:
        assert s.authenticate("ann", "from-the-env") is not None


def test_task_images_from_the_data_folder(world: dict, tmp_path: Path) -> None:
    """Items may reference images by path inside --data; a stored path that escapes it is still refused.

    On a store and app of its own (the module's --data folder, read only): the judge items it adds must
    not reach the shared store, whose export and Label Studio test counts exactly the imported ones.
    """
    store_url = f"sqlite:///{tmp_path / 'paths.db'}"
    with Store(store_url) as store:
        store.add_user("carol", PASSWORDS["alice"])
        (ok, bad), _ = store.add_items(
            NewItem(project="paths", kind="judge", pair_id=pid, source_path=path, target_path="imgs/ok.png",
                    payload={"instruction": "x", "model": "m", "benchmark": "paths"})
            for pid, path in (("by-path", "imgs/ok.png"), ("escaping", "../secret.png"))
        )  # fmt: skip
        carol = store.user_id("carol")
        ok_aid, bad_aid = store.assign_to(ok, carol), store.assign_to(bad, carol)
        with pytest.raises(ValueError, match="pass --data"):
            item_images(store, ok, "by-path", None)
        source, _ = item_images(store, ok, "by-path", world["data"])
    assert source == (world["data"] / "imgs" / "ok.png").read_bytes()
    with running_app(ReviewAppConfig(store=store_url, data=world["data"])) as base:
        client, _ = _login(base, "carol", PASSWORDS["alice"])
        try:
            image = client.get(f"/task/{ok_aid}/image/source")
            assert image.status_code == 200 and image.content == source
            escaped = client.get(f"/task/{bad_aid}/image/source")
            assert escaped.status_code == 400 and b"secret" not in escaped.content
        finally:
            client.close()
