"""Review store on SQLite: users, assignments, answers, undo, exports, and the seeding helper."""

from __future__ import annotations

from pathlib import Path

import pytest

from editcaption.review.exports import judgments
from editcaption.review.seed import seed_judgments
from editcaption.review.store import NewItem, NotYours, Store, StoreError
from editcaption.review.tasks import BadResult
from editcaption.schema import Judgment


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'review.db'}"


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
    with Store(store_url) as store:
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
