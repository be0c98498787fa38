"""A vLLM engine as a Ray Serve deployment, answering engine request rows with dynamic batching.

Concurrent calls are gathered by `EngineBatcher` (`batcher.py`: whatever waits when the engine is free,
up to `max_batch_size`) and answered by one `generate` call, which vLLM schedules together; with
`max_batch_size: 1` every request is its own engine call, which is what "batching off" means in the
benchmark. Batches run one at a time, off the event loop, so health checks stay answered.
"""

from __future__ import annotations

from typing import Any

from editcaption.engines.base import result_row
from editcaption.engines.vllm_engine import VLLMPredictor
from editcaption.serving.batcher import EngineBatcher
from editcaption.serving.config import EngineDeploymentConfig

ENGINE_REJECTED = "rejected by the engine"


class EngineServer:
    """One in-process `vllm.LLM` (via `VLLMPredictor`); `answer(row)` returns the row with its result."""

    def __init__(self, config: EngineDeploymentConfig) -> None:
        self.config = config
        self.predictor = VLLMPredictor(config.engine)
        self.batcher = EngineBatcher(
            self._answer_many, config.batching.max_batch_size, config.batching.batch_wait_timeout_s
        )

    def __del__(self) -> None:
        # Serve calls this when the replica stops; the engine-core processes must go with it.
        predictor = getattr(self, "predictor", None)
        if predictor is not None:
            predictor.close()

    async def ready(self) -> str:
        return self.config.engine.model

    async def answer(self, row: dict[str, Any]) -> dict[str, Any]:
        return await self.batcher.submit(row)

    async def batch_sizes(self) -> list[int]:
        """Sizes of the latest engine calls (up to 4096; the benchmark reports them)."""
        return list(self.batcher.batch_sizes)

    def _answer_many(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """All rows in one engine call; if the engine refuses the call (one prompt too long, say),
        each row is retried alone so only the offending request fails."""
        try:
            return self.predictor.answer_many(rows)
        except Exception:
            return [self._alone(row) for row in rows]

    def _alone(self, row: dict[str, Any]) -> dict[str, Any]:
        """One row's answer; a refusal caused by the request (vLLM's client errors: too long, bad
        parameters) is marked ENGINE_REJECTED (a 4xx), anything else stays an engine failure."""
        from vllm.exceptions import VLLMClientError

        try:
            return self.predictor.answer_many([row])[0]
        except (VLLMClientError, ValueError) as e:
            return result_row(row, None, error=f"{ENGINE_REJECTED}: {type(e).__name__}: {e}")
        except Exception as e:
            return result_row(row, None, error=f"engine failure: {type(e).__name__}: {e}")
