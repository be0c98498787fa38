"""No lost work: 8 annotators submit 500 answers each, concurrently, through the HTTP app (uvicorn).

Runs on SQLite (WAL, synchronous=FULL) and on a real PostgreSQL started for the module. Afterwards
every answer is in the store exactly as sent, and the judgment export equals what the store holds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from argon2 import PasswordHasher
from review_servers import local_postgres, serve_process

from editcaption.review.exports import export, judgments
from editcaption.review.store import NewItem, Store
from editcaption.schema import VERDICTS

ANNOTATORS = 8
PER_ANNOTATOR = 500
ERRORS = ("orientation", "viewpoint", "attribute", "other")


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with local_postgres() as url:
        yield url


def _answer(annotator: int, n: int) -> dict:
    verdict = VERDICTS[(annotator * 7 + n) % 3]
    return {"verdict": verdict, "error_types": [] if verdict == "correct" else [ERRORS[n % 4]]}


def _annotate(base: str, who: int, sent: dict, failures: list) -> None:
    name = f"ann{who}"
    try:
        with httpx.Client(base_url=base, headers={"accept": "application/json"}, timeout=120) as client:
            token = client.get("/login").json()["csrf_token"]
            token = client.post(
                "/login", data={"name": name, "password": f"{name}-password", "csrf_token": token}
            ).json()["csrf_token"]
            queue = client.get("/queue", params={"kind": "judge"}).json()["pending"]
            assert len(queue) == PER_ANNOTATOR
            for n, aid in enumerate(queue):
                answer = _answer(who, n)
                reply = client.post(f"/task/{aid}", data={**answer, "csrf_token": token})
                reply.raise_for_status()
                assert reply.json()["ok"] is True
                sent[(name, aid)] = answer
            assert client.get("/next", params={"kind": "judge"}).json().get("done") is True
    except Exception as exc:  # reported by the test thread
        failures.append(f"{name}: {exc!r}")


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend",
    ["sqlite", pytest.param("postgresql", marks=pytest.mark.ci_extra)],  # `make test-extra`: CI's budget
)
def test_eight_annotators_lose_nothing(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = (
        f"sqlite:///{tmp_path / 'review.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    # cheap argon2 for the test accounts (logins are not what is measured); verify reads the cost from the hash
    with Store(url, hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)) as store:
        names = [f"ann{i}" for i in range(ANNOTATORS)]
        for name in names:
            store.add_user(name, f"{name}-password")
        ids, _ = store.add_items(
            NewItem(
                project="load",
                kind="judge",
                pair_id=f"p{i}",
                payload={"instruction": f"instruction {i}", "model": f"m{i % 3}", "benchmark": "load-bench"},
            )
            for i in range(ANNOTATORS * PER_ANNOTATOR)
        )
        assert store.assign(ids, names, k=1) == ANNOTATORS * PER_ANNOTATOR
        assert {r["annotator"]: r["pending"] for r in store.progress()} == dict.fromkeys(names, PER_ANNOTATOR)

    sent: dict = {}
    failures: list[str] = []
    with serve_process(url) as base:
        threads = [
            threading.Thread(target=_annotate, args=(base, i, sent, failures)) for i in range(ANNOTATORS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []
    assert len(sent) == ANNOTATORS * PER_ANNOTATOR

    with Store(url) as store:
        uids = {name: store.user_id(name) for name in names}
        stored = {
            (r.annotator, store.assignment_id(r.item_id, uids[r.annotator])): r.result
            for r in store.done("judge")
        }
        assert stored == sent
        assert all(r["done"] == PER_ANNOTATOR and r["pending"] == 0 for r in store.progress())
    out = tmp_path / "judgments.parquet"
    assert export(url, "judgment", out).rows == len(sent)
    exported = sorted(
        (r["judge"], r["pair_id"], r["verdict"], tuple(r["error_types"]))
        for r in pq.read_table(out).to_pylist()
    )
    in_store = sorted((j.judge, j.pair_id, j.verdict, tuple(j.error_types)) for j in judgments(url))
    assert exported == in_store
    assert len(in_store) == ANNOTATORS * PER_ANNOTATOR
