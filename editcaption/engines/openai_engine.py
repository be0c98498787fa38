"""Any OpenAI-compatible chat endpoint: GLM or Gemini APIs, a `vllm serve` server, our own endpoint.

Each Ray actor keeps one HTTP client and at most `max_concurrency` requests in flight. Rate limits
(429) and server errors (5xx), timeouts and dropped connections are retried with exponential backoff
and jitter (honouring `Retry-After`); other 4xx are the request's fault and are not retried.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import threading
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
from pydantic import Field

from editcaption.engines.base import (
    Engine,
    EngineConfigBase,
    request_images,
    result_row,
    rows_to_batch,
    with_image_parts,
)
from editcaption.engines.families import merged
from editcaption.images import encode_png

if TYPE_CHECKING:
    import httpx
    import ray.data

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIEngineConfig(EngineConfigBase):
    """An OpenAI-compatible `/chat/completions` endpoint."""

    backend: Literal["openai"] = "openai"
    model: str = Field(description="The model's name in the API (not a path: sent as `model`).")
    base_url: str = Field(description="Up to and including `/v1`, e.g. `http://127.0.0.1:8000/v1`.")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY", description="Environment variable holding the API key; None sends no key."
    )
    max_concurrency: int = Field(8, ge=1, description="Requests in flight per actor.")
    batch_size: int = Field(16, ge=1, description="Requests per Ray Data batch.")
    timeout_s: float = Field(120.0, gt=0, description="Per-attempt timeout.")
    max_retries: int = Field(4, ge=0, description="Retries after the first attempt.")
    backoff_s: float = Field(1.0, ge=0, description="First retry waits about this long, doubling after.")
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra fields sent in every request body, e.g. GLM's `thinking: {type: disabled}` or a "
        "vLLM server's `chat_template_kwargs`; merged over the model family's API defaults "
        "(`engines/families.py`: GLM-4.5V gets `thinking: {type: enabled}`), and a key set to null drops "
        "that default. Fields the client sets itself (model, messages, sampling) cannot be overridden.",
    )

    def body_extra(self) -> dict[str, Any]:
        """The extra body fields in force: the family's API defaults, then this config's."""
        return merged(self.model_family().api_extra_body, self.extra_body)

    def reasons(self) -> bool:
        """GLM's API switches reasoning with `thinking`; a vLLM server with `chat_template_kwargs`."""
        extra = self.body_extra()
        if (extra.get("thinking") or {}).get("type") == "disabled":
            return False
        return self.model_family().reasons(extra.get("chat_template_kwargs"))

    def api_key(self) -> str | None:
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ValueError(
                f"the OpenAI-compatible engine needs an API key in ${self.api_key_env} "
                "(set it, or set api_key_env: null for servers without keys)"
            )
        return key


class OpenAIChatClient:
    """A Ray Data callable class: sends one batch concurrently, retries what is worth retrying."""

    def __init__(self, config: OpenAIEngineConfig) -> None:
        self.config = config
        # Ray Data calls us from worker threads: one event loop of our own keeps the client's
        # connection pool and the concurrency limit alive across batches.
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True, name="openai-engine").start()
        self._run(self._open())

    async def _open(self) -> None:
        import httpx

        key = self.config.api_key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.AsyncClient(
            base_url=self.config.base_url, headers=headers, timeout=self.config.timeout_s
        )
        self.limit = asyncio.Semaphore(self.config.max_concurrency)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def __call__(self, batch: pa.Table) -> dict[str, list[Any]]:
        rows = batch.to_pylist()  # Arrow nulls stay None (numpy batches turn all-null columns into NaN)
        return rows_to_batch(self.answer_many(rows))

    def answer_many(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self._run(self.answer_all(rows))

    async def answer_all(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self.answer(r) for r in rows)))

    async def answer(self, row: dict[str, Any]) -> dict[str, Any]:
        cfg = self.config
        try:
            body = self.body(row)
        except Exception as e:
            return result_row(row, None, error=f"bad request: {type(e).__name__}: {e}")
        async with self.limit:
            reply, error = await self.post_with_retries(body)
        if error is not None:
            return result_row(row, None, error=error)
        try:
            choice = reply["choices"][0]
            message = choice["message"]
            text = message.get("content") or ""
            # GLM's API names the reasoning `reasoning_content`; vLLM 0.32's server names it `reasoning`.
            reasoning = message.get("reasoning_content") or message.get("reasoning") or None
            finish_reason = choice.get("finish_reason") or None
            logprobs = None
            if body.get("logprobs"):
                logprobs = [float(t["logprob"]) for t in (choice.get("logprobs") or {}).get("content") or []]
            tokens = int((reply.get("usage") or {}).get("completion_tokens") or 0)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            return result_row(row, None, error=f"unexpected reply from {cfg.base_url}: {e!r}")
        return result_row(
            row,
            text,
            token_logprobs=logprobs,
            num_output_tokens=tokens,
            finish_reason=finish_reason,
            reasoning=reasoning,
        )

    def body(self, row: dict[str, Any]) -> dict[str, Any]:
        """The chat request: our image parts become base64 PNG data URLs, in order."""
        cfg = self.config
        images = iter(
            "data:image/png;base64," + base64.b64encode(encode_png(img)).decode()
            for img in request_images(row, cfg.max_pixels, cfg.min_pixels)
        )
        messages = with_image_parts(json.loads(row["messages"]), len(row["images"]))
        wire = []
        for m in messages:
            content = m["content"]
            if isinstance(content, list):
                content = [
                    {"type": "image_url", "image_url": {"url": next(images)}} if p["type"] == "image" else p
                    for p in content
                ]
            wire.append({**m, "content": content})
        sampling = json.loads(row["sampling"])
        body: dict[str, Any] = {
            **cfg.body_extra(),
            "model": cfg.model,
            "messages": wire,
            "max_tokens": sampling["max_tokens"],
            "temperature": sampling["temperature"],
            "top_p": sampling["top_p"],
        }
        if sampling.get("top_k") is not None:
            body["top_k"] = sampling["top_k"]  # not in OpenAI's API; vLLM's server takes it
        if sampling["seed"] is not None:
            body["seed"] = sampling["seed"]
        if sampling["logprobs"]:
            body["logprobs"] = True
        return body

    async def post_with_retries(self, body: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        import httpx

        cfg = self.config
        error = "no attempt made"
        for attempt in range(cfg.max_retries + 1):
            wait = cfg.backoff_s * 2**attempt * (0.5 + random.random())
            try:
                resp = await self.client.post("/chat/completions", json=body)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                error = f"{type(e).__name__}: {e}"
            else:
                if resp.status_code == 200:
                    return resp.json(), None
                error = f"HTTP {resp.status_code}: {resp.text[:300]}"
                if resp.status_code not in RETRYABLE_STATUS:
                    return None, error
                wait = max(wait, _retry_after(resp))
            if attempt < cfg.max_retries:
                await asyncio.sleep(wait)
        return None, f"gave up after {cfg.max_retries + 1} attempts: {error}"


def _retry_after(resp: httpx.Response) -> float:
    try:
        return float(resp.headers.get("retry-after", 0))
    except ValueError:
        return 0.0


class OpenAIEngine(Engine):
    def __init__(self, config: OpenAIEngineConfig) -> None:
        config.api_key()  # fail here, on the driver, not in every actor
        self.config = config

    def predictor(self) -> tuple[type, dict[str, Any], dict[str, Any]]:
        return OpenAIChatClient, {"config": self.config}, {"num_cpus": 0.25, **self.config.ray_resources()}

    def apply(self, ds: ray.data.Dataset) -> ray.data.Dataset:
        from ray.data import ActorPoolStrategy

        cfg = self.config
        return ds.map_batches(
            OpenAIChatClient,
            fn_constructor_kwargs={"config": cfg},
            batch_size=cfg.batch_size,
            compute=ActorPoolStrategy(size=cfg.replicas),
            num_cpus=0.25,
            batch_format="pyarrow",
            **cfg.ray_resources(),
        )
