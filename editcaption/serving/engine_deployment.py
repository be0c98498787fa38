"""A vLLM engine as a Ray Serve deployment, answering engine request rows as they come.

By default (`async_engine: true`) the replica holds vLLM's async engine (`AsyncLLM`,
`engines/vllm_async.py`): each request joins the running batch at the engine's next step (continuous
batching), so a short request is answered when its own tokens are done, not when the longest reply of
its batch is. With `async_engine: false` the replica holds a synchronous `vllm.LLM` behind
`EngineBatcher` (`batcher.py`: whatever waits when the engine is free, up to `max_batch_size`, in one
`generate` call, run off the event loop); `max_batch_size: 1` then turns batching off. That path stays
for comparison in `benchmarks/serve.py`.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from editcaption.engines.base import result_row
from editcaption.engines.vllm_async import ENGINE_REJECTED, AsyncVLLMPredictor
from editcaption.engines.vllm_engine import VLLMPredictor
from editcaption.serving.batcher import EngineBatcher
from editcaption.serving.config import EngineDeploymentConfig

__all__ = ["ENGINE_REJECTED", "EngineServer"]


class EngineServer:
    """One vLLM engine per replica; `answer(row)` returns the row with its result."""

    def __init__(self, config: EngineDeploymentConfig) -> None:
        self.config = config
        # Requests in this replica when each request arrived, itself included (the latest 4096; the
        # benchmark reports them).
        self.concurrency: deque[int] = deque(maxlen=4096)
        self._active = 0
        self.batcher: EngineBatcher | None = None
        if config.engine.async_engine:
            self.engine: AsyncVLLMPredictor | VLLMPredictor = AsyncVLLMPredictor(config.engine)
        else:
            self.engine = VLLMPredictor(config.engine)
            batching = config.batching
            self.batcher = EngineBatcher(
                self._answer_many, batching.max_batch_size, batching.batch_wait_timeout_s
            )

    def __del__(self) -> None:
        # Serve calls this when the replica stops; the engine-core processes must go with it.
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()

    async def ready(self) -> str:
        return self.config.engine.model

    async def check_health(self) -> None:
        """Serve's periodic health check: an async engine whose core died fails it, and Serve replaces
        the replica instead of answering 502 forever."""
        if isinstance(self.engine, AsyncVLLMPredictor):
            await self.engine.check_health()

    async def answer(self, row: dict[str, Any]) -> dict[str, Any]:
        if self.batcher is not None:
            return await self.batcher.submit(row)
        assert isinstance(self.engine, AsyncVLLMPredictor)
        self._active += 1
        self.concurrency.append(self._active)
        try:
            return await self.engine.answer(row)
        finally:
            self._active -= 1

    async def engine_stats(self) -> dict[str, Any]:
        """What the engine saw lately: the sizes of its calls (batcher), or how many requests were in
        the replica when each arrived (async engine)."""
        if self.batcher is not None:
            return {"engine": "batcher", "batch_sizes": list(self.batcher.batch_sizes)}
        return {"engine": "async", "concurrency": list(self.concurrency)}

    def _answer_many(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """All rows in one engine call; if the engine refuses the call (one prompt too long, say),
        each row is retried alone so only the offending request fails."""
        try:
            return self.engine.answer_many(rows)
        except Exception:
            return [self._alone(row) for row in rows]

    def _alone(self, row: dict[str, Any]) -> dict[str, Any]:
        """One row's answer; a refusal caused by the request (vLLM's client errors: too long, bad
        parameters) is marked ENGINE_REJECTED (a 4xx), anything else stays an engine failure."""
        from vllm.exceptions import VLLMClientError

        try:
            return self.engine.answer_many([row])[0]
        except (VLLMClientError, ValueError) as e:
            return result_row(row, None, error=f"{ENGINE_REJECTED}: {type(e).__name__}: {e}")
        except Exception as e:
            return result_row(row, None, error=f"engine failure: {type(e).__name__}: {e}")
