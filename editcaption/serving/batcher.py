"""Dynamic batching that forms a batch when the engine is free, not when requests arrive.

Ray Serve's `@serve.batch` (2.60) closes a batch `batch_wait_timeout_s` after its first request and
queues it behind the running one, so under load the engine runs many small batches, each made of the
few requests that arrived within one short window (measured: batches of 1-3 at 32 clients, for an
engine call of ~0.15 s; a longer window fills them but makes a lone request wait out the window).
Here one loop runs the engine; each time it is free it takes everything waiting, up to
`max_batch_size`. A request arriving at an idle engine waits at most `batch_wait_timeout_s` for company.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

Row = dict[str, Any]


class EngineBatcher:
    """`await batcher.submit(row)` → the row's answer from `answer_many(rows)`, run in a thread."""

    def __init__(
        self, answer_many: Callable[[list[Row]], list[Row]], max_batch_size: int, wait_s: float
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.answer_many = answer_many
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self.batch_sizes: deque[int] = deque(maxlen=4096)  # the latest engine calls' sizes
        self._queue: asyncio.Queue[tuple[Row, asyncio.Future]] | None = None
        self._loop_task: asyncio.Task | None = None  # held so the running loop is not collected

    async def submit(self, row: Row) -> Row:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._loop_task = asyncio.create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((row, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            if self.wait_s > 0 and self.max_batch_size > 1 and self._queue.empty():
                await asyncio.sleep(self.wait_s)  # an idle engine: give concurrent callers a moment
            while len(batch) < self.max_batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [(row, future) for row, future in batch if not future.done()]  # drop cancelled calls
            if not live:
                continue
            self.batch_sizes.append(len(live))
            try:
                answers = await asyncio.to_thread(self.answer_many, [row for row, _ in live])
            except Exception as e:  # answer_many answers per row; this is a bug, surfaced per request
                answers = [e] * len(live)
            for (_, future), answer in zip(live, answers, strict=True):
                if future.done():
                    continue
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)
