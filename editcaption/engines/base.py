"""One way to ask a VLM about two images, whatever runs the model.

A request row is Arrow-friendly: the images stay encoded bytes until the engine's own stage decodes
and resizes them, and the chat messages travel as JSON with one `{"type": "image"}` part per image.
Every engine maps a Ray Dataset of request rows to the same rows plus result columns, so synthesis,
evaluation and benchmarks swap engines without changing their pipelines. A request that fails gets an
`error` and no `text`; it never fails the whole run.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator

from editcaption.engines.families import FAMILY_NAMES, ModelFamily, family_of
from editcaption.images import ImagePolicy, decode_image, fit_to_pixel_budget
from editcaption.paths import ModelPath
from editcaption.redaction import redact_text
from editcaption.schema import pair_table

if TYPE_CHECKING:
    import ray.data

DEFAULT_ROWS_PER_BATCH = 8
# Batches an async-engine actor works on at once: one being answered while the next arrives and starts.
BATCHES_IN_FLIGHT = 2
# How many times a default vLLM batch fills the engine's `max_num_seqs`: a batch that fills it once
# drains at its longest reply and leaves the engine idle (synthesis benchmark, 6 Dec: steady rate 0.70x
# the bare engine's with one fill, 0.95-1.10x with two).
BATCH_FILLS = 2


class EngineConfigBase(BaseModel):
    """What every backend's config has: the model, how many copies, and the image pixel budget."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: ModelPath = Field(description="The model: a local folder, object-store path or hub id.")
    replicas: int = Field(
        1, ge=1, description="Ray actors running the engine; Ray Data spreads batches over them."
    )
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources each replica reserves besides its CPUs and GPUs, so engines run "
        "only on nodes that offer them: e.g. {'gpu-1x': 1} with worker nodes started as `ray start "
        "--resources '{\"gpu-1x\": 1}'` (a node type), or {'accelerator_type:H100': 0.001}.",
    )
    max_pixels: int = Field(1_003_520, description="Each image is resized to at most this many pixels...")
    min_pixels: int = Field(3136, description="...and at least this many.")
    family: str | None = Field(
        None,
        description="Model family whose chat-template, API and reply-format defaults apply "
        f"(`engines/families.py`: {', '.join(FAMILY_NAMES)}); None picks it from the model id or path, "
        "and a model no pattern matches gets none.",
    )

    @field_validator("family")
    @classmethod
    def _known_family(cls, name: str | None) -> str | None:
        if name is not None:
            family_of("", name)  # raises with the known names
        return name

    def model_family(self) -> ModelFamily:
        return family_of(self.model, self.family)

    def reasons(self) -> bool:
        """Whether replies start with a reasoning block under this config."""
        return self.model_family().reasons()

    def ray_resources(self) -> dict[str, Any]:
        """`resources=` for the replica's Ray actor, or nothing when no custom resource is asked for."""
        return {"resources": dict(self.resources)} if self.resources else {}


class SamplingSettings(BaseModel):
    """Sampling for one request; the defaults give reproducible greedy output."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(128, ge=1, description="Most new tokens to generate.")
    temperature: float = Field(0.0, ge=0.0, description="0 is greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1, description="Sample from the k likeliest tokens; None: no limit.")
    seed: int | None = Field(None, description="Per-request seed, for reproducible sampling.")
    logprobs: bool = Field(False, description="Return the log-probability of each generated token.")


class EngineRequest(BaseModel):
    """Two (or more) images plus chat messages whose image parts they fill, in order."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    images: list[bytes]
    messages: list[dict[str, Any]] = Field(
        description="OpenAI-style chat; user content is a list of parts, `{'type': 'image'}` per image."
    )
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)

    def to_row(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "images": list(self.images),
            "messages": json.dumps(self.messages),
            "sampling": self.sampling.model_dump_json(),
        }


class EngineResult(BaseModel):
    """The reply to one request; `error` is set (and `text` None) when it failed.

    `finish_reason` is `stop` when the model ended its reply and `length` when `max_tokens` cut it;
    `reasoning` holds a reasoning block the engine split off (vLLM's reasoning parser, an API's
    `reasoning_content`), so `text` is the answer part only.
    """

    request_id: str
    text: str | None
    token_logprobs: list[float] | None = None
    num_output_tokens: int = 0
    error: str | None = None
    finish_reason: str | None = None
    reasoning: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> EngineResult:
        logprobs = row.get("token_logprobs")
        return cls(
            request_id=row["request_id"],
            text=row.get("text"),
            token_logprobs=None if logprobs is None else [float(x) for x in logprobs],
            num_output_tokens=int(row.get("num_output_tokens") or 0),
            error=row.get("error") or None,
            finish_reason=row.get("finish_reason") or None,
            reasoning=row.get("reasoning"),
        )


Expand = Callable[[dict[str, Any]], list[EngineRequest]]
Merge = Callable[[dict[str, Any], list[EngineResult]], dict[str, Any]]


class Engine(ABC):
    """Runs a VLM as a Ray Data stage, in one of two shapes.

    `apply`: one request row in, the same row plus `text`, `token_logprobs`, `num_output_tokens`,
    `error` out. `apply_grouped`: one row in (a pair, say), `expand` turns it into any number of
    requests, `merge` folds their results back into one row out. Grouping stays inside one actor
    call, so a pair's candidates and scores never have to be reassembled after a shuffle.
    """

    @abstractmethod
    def apply(self, ds: ray.data.Dataset) -> ray.data.Dataset:
        """Add the result columns to every request row (lazily, as a Ray Data stage)."""

    @abstractmethod
    def predictor(self) -> tuple[type, dict[str, Any], dict[str, Any]]:
        """(callable class with `answer_many(request_rows)`, and optionally `answer_rounds(rows, steps)`
        for `GroupedCall`, its constructor kwargs, Ray resources)."""

    def async_predictor(self) -> tuple[type, dict[str, Any], dict[str, Any]] | None:
        """(class with `async answer_timed(request_row)`, its constructor kwargs, Ray resources) when the
        backend has an engine that schedules each request as it comes (vLLM's async engine), else None."""
        return None

    def rows_per_batch(self, requests_per_row: int) -> int:
        """Rows per grouped batch when the caller does not say. Engines that know how many sequences
        they run at once size it so that a batch's first round fills them."""
        return DEFAULT_ROWS_PER_BATCH

    def apply_grouped(
        self,
        ds: ray.data.Dataset,
        expand: Expand,
        merge: Merge,
        batch_size: int | None = None,
        replicas: int = 1,
        seconds_column: str | None = None,
    ) -> ray.data.Dataset:
        """Each row → `expand(row)` requests → answers → `merge(row, results)`, in a pool of actors.

        With `seconds_column`, each row also gets its share of the engine time its batch took, so a
        job can report per-stage time by summing the column.
        """
        return self.apply_steps(ds, [GroupedStep(expand, merge, seconds_column)], batch_size, replicas)

    def apply_steps(
        self,
        ds: ray.data.Dataset,
        steps: list[GroupedStep],
        batch_size: int | None = None,
        replicas: int = 1,
    ) -> ray.data.Dataset:
        """Several grouped rounds on one engine, one after the other for each row, in the same actor.

        When two stages ask the same model (captioning, then scoring with it), one engine doing both
        holds one copy of the weights and never competes with a second engine for the same cores.
        `batch_size` rows per batch, by default sized from the engine (`rows_per_batch`). With an async
        engine each row starts its next round as soon as its own requests are answered, and each actor
        works on `BATCHES_IN_FLIGHT` batches at once, so the engine never waits for a batch to finish
        or for the next one to arrive.
        """
        from ray.data import ActorPoolStrategy

        batch_size = batch_size or self.rows_per_batch(steps[0].requests_per_row)
        spec = self.async_predictor()
        if spec is None:
            call, (cls, kwargs, resources) = GroupedCall, self.predictor()
            compute = ActorPoolStrategy(size=replicas)
        else:
            call, (cls, kwargs, resources) = AsyncGroupedCall, spec
            compute = ActorPoolStrategy(size=replicas, max_concurrent_calls_per_actor=BATCHES_IN_FLIGHT)
        return ds.map_batches(
            call,
            fn_constructor_kwargs={"predictor_cls": cls, "predictor_kwargs": kwargs, "steps": steps},
            batch_size=batch_size,
            compute=compute,
            batch_format="pyarrow",
            **resources,
        )

    def generate(self, requests: list[EngineRequest]) -> list[EngineResult]:
        """Run a small list of requests to completion, results in request order."""
        import ray.data

        if not requests:
            return []
        ds = ray.data.from_items([r.to_row() for r in requests])
        by_id = {row["request_id"]: EngineResult.from_row(row) for row in self.apply(ds).take_all()}
        return [by_id[r.request_id] for r in requests]


@dataclass(frozen=True)
class GroupedStep:
    """One grouped round: `expand(row)` → requests, `merge(row, results)` → the row for the next round.

    With `seconds_column`, each row gets its share of the engine time this round took. `requests_per_row`
    is about how many requests `expand` makes of a row; the first round's sizes default batches.
    """

    expand: Expand
    merge: Merge
    seconds_column: str | None = None
    requests_per_row: int = 1


class BusyClock:
    """Engine-busy seconds shared fairly among the requests in flight.

    While n requests are in the engine, each is charged 1/n of the elapsed time, so the charges of all
    requests add up to the time the engine had work, however many overlapped: the grouped stages report
    per-stage engine time from them, as they did when a stage owned the engine for a whole batch.
    """

    def __init__(self, now: Callable[[], float] = time.perf_counter) -> None:
        self.now = now
        self.in_flight = 0
        self.busy_s = 0.0  # time with at least one request in flight
        self._shared = 0.0  # seconds each request in flight has been charged so far (a virtual clock)
        self._at = now()

    def _advance(self) -> None:
        now = self.now()
        if self.in_flight:
            self._shared += (now - self._at) / self.in_flight
            self.busy_s += now - self._at
        self._at = now

    def enter(self) -> float:
        self._advance()
        self.in_flight += 1
        return self._shared

    def leave(self, entered: float) -> float:
        """The request's charge since `enter` returned `entered`."""
        self._advance()
        self.in_flight -= 1
        return self._shared - entered


class GroupedCall:
    """Ray Data callable class behind `Engine.apply_steps`: per round, all requests of a batch go to
    the predictor at once, so the engine batches across rows; a predictor with `answer_rounds(rows,
    steps)` (in-process vLLM) runs every row's rounds itself, each row's next round sent as soon as its
    own requests are answered. Rows go out as a `schema.pair_table`, so candidates and scores keep
    their record types in every block."""

    def __init__(self, predictor_cls: type, predictor_kwargs: dict[str, Any], steps: list[GroupedStep]):
        self.predictor = predictor_cls(**predictor_kwargs)
        self.steps = steps

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()  # Arrow nulls stay None (numpy batches turn all-null columns into NaN)
        if hasattr(self.predictor, "answer_rounds"):
            return pair_table(self.predictor.answer_rounds(rows, self.steps))
        for step in self.steps:
            rows = self._round(rows, step)
        return pair_table(rows)

    def _round(self, rows: list[dict[str, Any]], step: GroupedStep) -> list[dict[str, Any]]:
        started = time.perf_counter()
        groups = [[r.to_row() for r in step.expand(row)] for row in rows]
        flat = [request for group in groups for request in group]
        answers = iter(self.predictor.answer_many(flat) if flat else [])
        merged = [
            step.merge(row, [EngineResult.from_row(next(answers)) for _ in group])
            for row, group in zip(rows, groups, strict=True)
        ]
        if step.seconds_column:
            share = (time.perf_counter() - started) / len(merged)
            merged = [{**row, step.seconds_column: share} for row in merged]
        return merged


class AsyncGroupedCall:
    """Ray Data callable class behind `Engine.apply_steps` for an async engine: every row runs its
    rounds on its own, each round's requests sent at once, so one row's scoring overlaps another's
    captioning and the engine's scheduler always has the work of every row in flight. A row's
    `seconds_column` is its requests' share of engine-busy time (`BusyClock`)."""

    def __init__(self, predictor_cls: type, predictor_kwargs: dict[str, Any], steps: list[GroupedStep]):
        self.predictor = predictor_cls(**predictor_kwargs)
        self.steps = steps

    async def __call__(self, batch: pa.Table) -> pa.Table:
        import asyncio

        rows = await asyncio.gather(*(self._row(row) for row in batch.to_pylist()))
        return pair_table(list(rows))

    async def _row(self, row: dict[str, Any]) -> dict[str, Any]:
        import asyncio

        for step in self.steps:
            requests = [r.to_row() for r in step.expand(row)]
            answers = await asyncio.gather(*(self.predictor.answer_timed(r) for r in requests))
            row = step.merge(row, [EngineResult.from_row(answer) for answer, _ in answers])
            if step.seconds_column:
                row = {**row, step.seconds_column: sum(busy for _, busy in answers)}
        return row


def request_images(row: dict[str, Any], max_pixels: int, min_pixels: int) -> list[Image.Image]:
    """Decode the request's images and fit them to the model's pixel budget, so image tokens never
    overflow the context and every backend sees the same pixels."""
    policy = ImagePolicy(reject_identical=False)
    return [
        fit_to_pixel_budget(decode_image(bytes(data), policy, role=f"image {i}"), max_pixels, min_pixels)
        for i, data in enumerate(row["images"])
    ]


def with_image_parts(messages: list[dict[str, Any]], n_images: int) -> list[dict[str, Any]]:
    """Check that the messages hold exactly one image part per image, so no image is silently dropped."""
    parts = [
        p
        for m in messages
        if isinstance(m.get("content"), list)
        for p in m["content"]
        if p.get("type") == "image"
    ]
    if len(parts) != n_images:
        raise ValueError(f"messages have {len(parts)} image parts for {n_images} images")
    return messages


def rows_to_batch(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {k: [r[k] for r in rows] for k in rows[0]}


def result_row(
    row: dict[str, Any],
    text: str | None,
    token_logprobs: list[float] | None = None,
    num_output_tokens: int = 0,
    error: str | None = None,
    finish_reason: str | None = None,
    reasoning: str | None = None,
) -> dict[str, Any]:
    """The request row with the result columns added (same columns for success and failure)."""
    return {
        **row,
        "text": text,
        "token_logprobs": token_logprobs,
        "num_output_tokens": num_output_tokens,
        "error": redact_text(error) if error else error,  # an API's error may quote the key it was sent
        "finish_reason": finish_reason,
        "reasoning": reasoning,
    }
