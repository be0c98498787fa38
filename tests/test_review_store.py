"""Review store on SQLite and on a real PostgreSQL: users, assignments, answers, undo, exports, stats, seeding."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from review_servers import local_postgres
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from editcaption.review.exports import judgments
from editcaption.review.seed import seed_judgments
from editcaption.review.store import LoginLimits, NewItem, NotYours, Store, StoreError
from editcaption.review.tasks import BadResult
from editcaption.schema import Judgment

CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # argon2, at a test-friendly cost


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[str]:
    with local_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store: a new SQLite file, or a new database on the module's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'review.db'}"
    server = request.getfixturevalue("postgres_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    engine.dispose()
    return server.rsplit("/", 1)[0] + "/" + name


def _judge_item(i: int, project: str = "bench") -> NewItem:
    return NewItem(
        project=project,
        kind="judge",
        pair_id=f"p{i}",
        payload={"instruction": f"move the cup {i} cm left", "model": "m", "benchmark": project},
    )


def test_seeded_judgments_read_back_exactly(store_url: str) -> None:
    records = [
        Judgment(
            pair_id=f"p{i}",
            instruction=f"instr {i}",
            model="cap-a" if i % 2 else "cap-b",
            benchmark="b1",
            judge=f"human:{'alice' if i < 3 else 'bob'}",
            verdict="correct" if i % 3 else "critical_error",
            error_types=[] if i % 3 else ["orientation"],
        )
        for i in range(6)
    ]
    assert seed_judgments(store_url, records) == 6
    got = judgments(store_url)
    assert sorted(j.model_dump_json() for j in got) == sorted(r.model_dump_json() for r in records)
    # the same instruction judged by two annotators is one item with two answers
    seed_judgments(
        store_url, [records[0].model_copy(update={"judge": "human:carol", "verdict": "minor_error"})]
    )
    assert len(judgments(store_url)) == 7
    with Store(store_url) as store:
        assert len(store.items(kind="judge")) == 6


def test_seed_refuses_model_judges(store_url: str) -> None:
    bad = Judgment(pair_id="p", instruction="x", model="m", benchmark="b", judge="gpt", verdict="correct")
    with pytest.raises(ValueError, match="not a human"):
        seed_judgments(store_url, [bad])


def test_assign_submit_undo_and_ownership(store_url: str) -> None:
    with Store(store_url, hasher=CHEAP) as store:
        alice = store.add_user("alice", "password-a")
        bob = store.add_user("bob", "password-b")
        ids, added = store.add_items(_judge_item(i) for i in range(4))
        assert added == 4
        assert store.add_items(_judge_item(i) for i in range(4)) == (ids, 0)  # reimport adds nothing
        assert store.assign(ids, ["alice", "bob"], k=1) == 4
        assert store.assign(ids, ["alice", "bob"], k=1) == 0
        mine = [r for r in store.progress() if r["annotator"] == "alice"][0]
        assert mine["pending"] == 2
        first = store.next_assignment(alice)
        assert first is not None
        with pytest.raises(NotYours):
            store.submit(bob, first, {"verdict": "correct"})
        with pytest.raises(NotYours):
            store.task(bob, first)
        with pytest.raises(BadResult, match="error type"):
            store.submit(alice, first, {"verdict": "critical_error"})
        store.submit(alice, first, {"verdict": "critical_error", "error_types": ["viewpoint"]})
        assert store.next_assignment(alice) != first
        assert store.undo(alice) == first
        assert store.next_assignment(alice) == first
        assert store.task(alice, first).result is None
        store.skip(alice, first)
        assert store.next_assignment(alice) not in (first, None)
        assert store.requeue_skipped(alice) == 1
        assert store.authenticate("alice", "password-a").name == "alice"
        assert store.authenticate("alice", "wrong-password") is None
        assert store.authenticate("nobody", "password-a") is None
        with pytest.raises(StoreError, match="exists already"):
            store.add_user("alice", "another-pass")
        with pytest.raises(StoreError, match="at least 8"):
            store.add_user("carol", "short")
        with pytest.raises(StoreError, match="user name"):
            store.add_user("../x", "long-enough")
        assert store.secret() == store.secret()


def test_preference_majority_agreement_and_ties(store_url: str) -> None:
    from collections import Counter

    from editcaption.review.exports import preference_pairs

    votes = {  # pair -> each annotator's (chosen, error_type, severity)
        "p0": [("a", "orientation", "minor"), ("a", "orientation", "critical"), ("b", "other", "minor")],
        "p1": [("a", "viewpoint", "major"), ("b", "viewpoint", "major")],
    }
    with Store(store_url, hasher=CHEAP) as store:
        uids = {n: store.add_user(n, f"{n}-password") for n in ("ann1", "ann2", "ann3")}
        for pid, answers in votes.items():
            (item,), _ = store.add_items(
                [NewItem(project="p", kind="prefer", pair_id=pid, source=b"S", target=b"T",
                         payload={"instruction_a": f"{pid} A", "instruction_b": f"{pid} B"})]
            )  # fmt: skip
            for name, (chosen, error, severity) in zip(uids, answers, strict=False):
                aid = store.assign_to(item, uids[name])
                store.submit(uids[name], aid, {"chosen": chosen, "error_type": error, "severity": severity})
        skipped: Counter = Counter()
        (pair,) = list(preference_pairs(store, skipped=skipped))
    assert skipped == {"tied_vote": 1}
    assert (pair.pair_id, pair.chosen, pair.rejected) == ("p0", "p0 A", "p0 B")
    assert pair.error_type == "orientation" and pair.severity == "critical"  # severity tie → the worse
    assert pair.annotators == ["ann1", "ann2", "ann3"] and pair.agreement == pytest.approx(2 / 3)
    assert (pair.source, pair.target) == (b"S", b"T")


def test_stats_agreement_and_rates(store_url: str) -> None:
    from editcaption.agreement import cohen_kappa
    from editcaption.review.stats import review_stats

    a = ["correct", "correct", "minor_error", "critical_error"]
    b = ["correct", "minor_error", "minor_error", "critical_error"]
    records = [
        Judgment(pair_id=f"p{i}", instruction=f"i{i}", model="cap-x" if i < 2 else "cap-y", benchmark="bench",
                 judge=f"human:{who}", verdict=v, error_types=[] if v == "correct" else ["other"])
        for who, labels in (("ann1", a), ("ann2", b))
        for i, v in enumerate(labels)
    ]  # fmt: skip
    seed_judgments(store_url, records)
    with Store(store_url) as store:
        stats = review_stats(store)
    judge = stats["agreement"]["judge"]
    assert judge["items_with_2plus"] == 4
    assert judge["percent_agreement"] == pytest.approx(3 / 4)
    (pair,) = judge["cohen_kappa"]
    assert pair["annotators"] == ["ann1", "ann2"] and pair["kappa"] == pytest.approx(cohen_kappa(a, b))
    assert stats["human_eval"]["by_model"]["cap-x"]["counts"] == {
        "correct": 3,
        "minor_error": 1,
        "critical_error": 0,
    }
    assert stats["human_eval"]["by_benchmark"]["bench"]["n"] == 8
    assert {r["annotator"]: r["done"] for r in stats["progress"]} == {"ann1": 4, "ann2": 4}


def test_store_url_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="store URL"):
        Store("mysql://x")
    with pytest.raises(StoreError, match="no review store"):
        Store(f"sqlite:///{tmp_path / 'missing.db'}", create=False)


def test_import_from_review_queue(tmp_path: Path) -> None:
    """Unscored pairs still reach people (first parsed candidate); pairs with nothing to show are counted."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from review_servers import write_review_queue

    from editcaption.review.importers import import_tasks

    queue = write_review_queue(tmp_path / "run" / "review_queue.parquet", 3)
    rows = pq.read_table(queue).to_pylist()
    rows[0]["best_instruction"] = None  # nothing scored
    rows[0]["scores"] = []
    rows[2]["candidates"] = [{**c, "instruction": None, "parsed": False} for c in rows[2]["candidates"]]
    rows[2]["best_instruction"] = None
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(queue)), queue)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with Store(url, hasher=CHEAP) as store:
        store.add_user("ann", "ann-password")
        refine = import_tasks(store, tmp_path / "run", "refine", project="run", annotators=["ann"])
        prefer = import_tasks(store, queue, "prefer", project="run", annotators=["ann"])
        assert (refine.items, dict(refine.skipped)) == (2, {"no_parsed_candidate": 1})
        assert (prefer.items, dict(prefer.skipped)) == (2, {"no_parsed_candidate": 1})
        tasks = {t["pair_id"]: t["payload"] for t in store.items("refine")}
        assert tasks["pair-00000"]["instruction"] == "Move the square 1 steps to the left."
        assert tasks["pair-00001"]["instruction"] == "Move the square 2 steps to the right."
        assert [c["overall"] for c in tasks["pair-00001"]["candidates"]] == [7.75, 4.9]
        pair = {t["pair_id"]: t["payload"] for t in store.items("prefer")}["pair-00001"]
        assert {pair["instruction_a"], pair["instruction_b"]} == {
            "Move the square 2 steps to the left.", "Move the square 2 steps to the right.",
        }  # fmt: skip
        with pytest.raises(ValueError, match="no annotators"):
            import_tasks(store, queue, "judge", project="run", annotators=[])


def test_imported_candidates_rank_as_synthesis_picks_its_best(tmp_path: Path) -> None:
    """Equal overall scores: the candidate with the higher semantic consistency comes first, as
    `best_score` picks it; an unscored candidate comes last. A sort on overall alone keeps file order."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from review_servers import write_review_queue

    from editcaption.prompts.scoring import best_score
    from editcaption.review.importers import import_tasks

    queue = write_review_queue(tmp_path / "review_queue.parquet", 1)
    (row,) = pq.read_table(queue).to_pylist()
    low, high = row["scores"]  # candidate 0 (SC 3.0), candidate 1 (SC 7.5)
    row["scores"] = [{**low, "overall": 6.0, "semantic_consistency": 9.0}, {**high, "overall": 6.0}]
    third = {**row["candidates"][0], "candidate_id": "pair-00000:2", "instruction": "Make the square red."}
    row["candidates"] = [row["candidates"][1], third, row["candidates"][0]]
    pq.write_table(pa.Table.from_pylist([row], schema=pq.read_schema(queue)), queue)
    with Store(f"sqlite:///{tmp_path / 'r.db'}", hasher=CHEAP) as store:
        store.add_user("ann", "ann-password")
        import_tasks(store, queue, "refine", project="run", annotators=["ann"])
        (task,) = store.items("refine")
    ranked = [c["candidate_id"] for c in task["payload"]["candidates"]]
    assert ranked == ["pair-00000:0", "pair-00000:1", "pair-00000:2"]
    assert ranked[0] == best_score(row["scores"])["candidate_id"]


def test_audit_log_is_append_only(store_url: str, tmp_path: Path) -> None:
    """Database triggers refuse to change or delete an audit entry, on SQLite and on PostgreSQL."""
    with Store(store_url, hasher=CHEAP, audit_file=tmp_path / "audit.jsonl") as store:
        store.add_user("ann", "ann-password", actor="admin")
        store.record("export", actor="ann", target="judgment", rows=3, detail={"format": "jsonl"})
        for statement in ("UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"):
            with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
                conn.execute(text(statement))
        entries = store.audit_entries()
    assert [(e["action"], e["actor"], e["target"], e["rows"]) for e in entries] == [
        ("user.add", "admin", "ann", None),
        ("export", "ann", "judgment", 3),
    ]
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["user.add", "export"]


def test_login_lock_counts_failures_in_the_window_and_unlock_lifts_it(store_url: str) -> None:
    limits = LoginLimits(max_failures_per_account=3, max_failures_per_address=5, window_s=600)
    with Store(store_url, hasher=CHEAP) as store:
        assert store.login_block("ann", "192.0.2.1", limits) is None
        for _ in range(3):
            store.record("login.failure", target="ann", address="192.0.2.1")
        start = datetime.now(UTC)
        block = store.login_block("ann", "192.0.2.9", limits, now=start)
        assert block is not None and block.scope == "account" and 590 < block.retry_after_s <= 600
        assert store.login_block("ann", "192.0.2.9", limits, now=start + timedelta(seconds=601)) is None
        store.unlock("ann")
        assert (
            store.login_block("ann", "192.0.2.9", limits) is None
        )  # failures before the unlock are forgotten
        for name in ("bo", "cy"):
            store.record("login.failure", target=name, address="192.0.2.1")
        block = store.login_block("dee", "192.0.2.1", limits)  # 5 failures from this address, any name
        assert block is not None and block.scope == "address"
        store.unlock(address="192.0.2.1")
        assert store.login_block("dee", "192.0.2.1", limits) is None


def test_sessions_end_on_close_password_change_and_expiry(store_url: str) -> None:
    with Store(store_url, hasher=CHEAP) as store:
        uid = store.add_user("ann", "ann-password")
        first, second = store.open_session(uid, 1), store.open_session(uid, 1)
        assert first != second and store.session_user(first).name == "ann"
        store.change_password(uid, "new-password", keep_session=first)
        assert store.session_user(first) is not None and store.session_user(second) is None
        store.close_session(first)
        assert store.session_user(first) is None
        expired = store.open_session(uid, -1)
        assert store.session_user(expired) is None
        assert store.authenticate("ann", "new-password") is not None
