"""The captioner's HTTP API as a Ray Serve application: a FastAPI ingress in front of engine deployments.

`build_app(args)` is the `import_path` of every Serve config in `serve_configs/`: `args` is a
`ServeConfig`. The ingress checks keys, body size, content types and images, turns a request into
engine request rows (the same prompts and parsers as synthesis) and awaits the `Captioner`
deployment, which batches rows from concurrent requests into one engine call. `score: true` sends
the candidates to the `Scorer` deployment, or to the captioner's engine when no scorer is configured.
Every refusal is a 4xx with a reason; a full queue is a 503 with `Retry-After`. Wrong keys are
throttled per key prefix and client address (429), each key has per-minute request and token quotas
(429), and every auth or quota refusal is logged as one JSON line and counted in `/metrics`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import sys
import time
import uuid
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle

from editcaption.engines.base import EngineRequest, EngineResult, SamplingSettings
from editcaption.engines.vllm_engine import VLLMEngine
from editcaption.images import ImagePolicy, ImageRejected, check_pair, decode_image
from editcaption.prompts.instruction import PROMPT_VERSION, caption_expand, make_candidate
from editcaption.prompts.scoring import best_score, instruction_votes, score_expand, score_merge
from editcaption.proxies import client_address, parse_networks
from editcaption.redaction import redact_text
from editcaption.serving.config import EngineDeploymentConfig, ServeConfig
from editcaption.serving.engine_deployment import ENGINE_REJECTED, EngineServer
from editcaption.serving.schemas import (
    MULTIPART_SCHEMA,
    ChatChoice,
    ChatChoiceMessage,
    ChatCompletion,
    ChatRequest,
    ChatUsage,
    InstructionOptions,
    InstructionsJSON,
    InstructionsResponse,
    ModelCard,
    ModelList,
)
from editcaption.serving.security import KeyChecker, KeyQuotas, RequestRefused, fetch_image, key_id

api = FastAPI(
    title="EditCaption captioner",
    version="1",
    description="Editing instructions for (source, target) image pairs, and an OpenAI-compatible chat API.",
)

REGISTRY = CollectorRegistry()  # one per replica process; /metrics shows this replica's view
REQUESTS = Counter(
    "editcaption_requests", "HTTP requests by route and status", ["route", "status"], registry=REGISTRY
)
LATENCY = Histogram(
    "editcaption_request_seconds",
    "HTTP request latency by route",
    ["route"],
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
CANDIDATES = Counter(
    "editcaption_candidates", "Instructions written, by parse outcome", ["parsed"], registry=REGISTRY
)
AUTH_REFUSALS = Counter(
    "editcaption_auth_refusals",
    "Requests refused by the API-key check: missing, malformed, invalid_key, throttled_address, "
    "throttled_key_prefix",
    ["reason"],
    registry=REGISTRY,
)
QUOTA_REFUSALS = Counter(
    "editcaption_quota_refusals",
    "Requests refused by a key's quota, by key id and limit (requests or tokens)",
    ["key", "limit"],
    registry=REGISTRY,
)
KEY_REQUESTS = Counter(
    "editcaption_key_requests", "Requests admitted, by API key id", ["key"], registry=REGISTRY
)
KEY_TOKENS = Counter(
    "editcaption_generated_tokens", "Tokens generated for each API key id", ["key"], registry=REGISTRY
)
SECURITY_LOG = "editcaption.serving.security"

LENGTH_HINTS = {
    "short": "Keep it to one short sentence.",
    "medium": "Use one or two sentences.",
    "long": "Use up to four sentences and name every changed attribute precisely.",
}
BEARER = [{"bearer": []}]


@api.middleware("http")
async def _count(request: Request, call_next: Any) -> Response:
    started = time.perf_counter()
    route = request.url.path if request.url.path in _ROUTES else "other"
    response = await call_next(request)
    REQUESTS.labels(route, str(response.status_code)).inc()
    LATENCY.labels(route).observe(time.perf_counter() - started)
    return response


@api.exception_handler(RequestRefused)
async def _refused(request: Request, exc: RequestRefused) -> JSONResponse:
    if exc.event:
        _record_refusal(exc.event, request.url.path)
    return JSONResponse({"detail": redact_text(exc.reason)}, status_code=exc.status, headers=exc.headers)


def _openapi() -> dict[str, Any]:
    """FastAPI's document plus the hand-parsed bodies (JSON or multipart) and the bearer scheme."""
    if api.openapi_schema:
        return api.openapi_schema
    schema = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for model in (InstructionsJSON, ChatRequest):
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(body.pop("$defs", {}))
        schemas[model.__name__] = body
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    api.openapi_schema = schema
    return schema


api.openapi = _openapi  # type: ignore[method-assign]

_INSTRUCTIONS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/InstructionsJSON"}},
            "multipart/form-data": {"schema": MULTIPART_SCHEMA},
        },
    },
    "security": BEARER,
}
_CHAT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}}},
    },
    "security": BEARER,
}
_ROUTES = {"/v1/instructions", "/v1/chat/completions", "/v1/models", "/healthz", "/readyz", "/metrics"}


# ---------------------------------------------------------------------- helpers
# The ingress class is serialized by value, with copies of the module objects it names; it reaches the
# metrics through these functions, which are imported by reference, so every route shares one registry.


def _metrics_text() -> bytes:
    return generate_latest(REGISTRY)


def _count_candidates(candidates: list[dict[str, Any]]) -> None:
    for c in candidates:
        CANDIDATES.labels(str(c["parsed"]).lower()).inc()


def _security_log() -> logging.Logger:
    """JSON lines on stderr (Ray sends a replica's stderr to its log file and to the driver)."""
    logger = logging.getLogger(SECURITY_LOG)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def _record_refusal(event: dict[str, Any], route: str) -> None:
    """Log an auth or quota refusal as one JSON object and count it."""
    if event["event"] == "quota_refused":
        QUOTA_REFUSALS.labels(event["key_id"], event["limit"]).inc()
    elif event["event"] == "auth_throttled":
        AUTH_REFUSALS.labels(f"throttled_{event['scope']}").inc()
    else:
        AUTH_REFUSALS.labels(event["reason"]).inc()
    line = {"ts": round(time.time(), 3), **event, "route": route if route in _ROUTES else "other"}
    _security_log().warning(redact_text(json.dumps(line, sort_keys=True)))


def _count_key_request(digest: str) -> None:
    KEY_REQUESTS.labels(key_id(digest)).inc()


def _count_tokens(digest: str, tokens: int) -> None:
    KEY_TOKENS.labels(key_id(digest)).inc(tokens)


def _content_type(request: Request, accepted: tuple[str, ...]) -> str:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in accepted:
        raise RequestRefused(415, f"Content-Type must be {' or '.join(accepted)}, not {kind or 'missing'!r}")
    return kind


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestRefused(400, f"body is not valid JSON: {e}") from e


def _validated(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in e.errors(include_url=False, include_context=False, include_input=False)
        ]
        raise RequestRefused(422, "; ".join(problems)[:2000]) from e


def _base64_image(text: str, role: str) -> bytes:
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise RequestRefused(422, f"{role}: a data URL must be base64 (`data:image/png;base64,...`)")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestRefused(422, f"{role}: not valid base64: {e}") from e


_TOO_BIG = {"too_many_pixels", "decompression_bomb"}


def _checked_image(data: bytes, policy: ImagePolicy, role: str) -> None:
    try:
        decode_image(data, policy, role=role)
    except ImageRejected as e:
        raise RequestRefused(413 if e.reason in _TOO_BIG else 422, str(e)) from e


def _checked_pair(source: bytes, target: bytes, policy: ImagePolicy) -> None:
    try:
        check_pair(source, target, policy)
    except ImageRejected as e:
        raise RequestRefused(413 if e.reason in _TOO_BIG else 422, str(e)) from e


def _add_style(request: EngineRequest, options: InstructionOptions) -> None:
    """Append the length and language wishes to the instruction prompt's text part."""
    style = LENGTH_HINTS[options.length]
    if options.language.lower() != "en":
        style += f" Write the instruction in the language with BCP 47 code `{options.language}`."
    user = request.messages[-1]["content"]
    user[-1] = {**user[-1], "text": f"{user[-1]['text']}\n{style}"}


def _best(candidates: list[dict[str, Any]], scores: dict[str, dict[str, Any]]) -> str | None:
    """The best-scored parsed candidate's instruction (`best_score`), else the first parsed one."""
    parsed = [c for c in candidates if c["parsed"]]
    scored = [scores[c["candidate_id"]] for c in parsed if c["candidate_id"] in scores]
    best = best_score(scored, instruction_votes(parsed))
    if best is not None:
        return next(c["instruction"] for c in parsed if c["candidate_id"] == best["candidate_id"])
    return parsed[0]["instruction"] if parsed else None


def _candidate_out(candidate: dict[str, Any], score: dict[str, Any] | None) -> dict[str, Any]:
    keys = ("candidate_id", "instruction", "raw_text", "parsed", "error")
    out = {k: candidate[k] for k in keys}
    if score is not None:
        out["score"] = {
            k: score[k]
            for k in ("semantic_consistency", "perceptual_quality", "overall", "num_pass", "num_parsed")
        }
    return out


def _finish_reason(result: EngineResult, max_tokens: int) -> Literal["stop", "length"]:
    """The engine's own reason when it gave one (a reply that ends on its end-of-sequence token at
    exactly `max_tokens` is `stop`); else whether the reply used the whole budget."""
    if result.finish_reason in ("stop", "length"):
        return result.finish_reason
    return "length" if result.num_output_tokens >= max_tokens else "stop"


# The ingress comes after every helper it calls: Serve serializes the class when it is decorated.


@serve.deployment(name="CaptionerAPI", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=256)
@serve.ingress(api)
class CaptionerAPI:
    """The ingress: validation, auth and limits here; generation in the engine deployments."""

    def __init__(
        self, config: ServeConfig, captioner: DeploymentHandle, scorer: DeploymentHandle | None = None
    ) -> None:
        self.config = config
        self.captioner = captioner
        self.scorer = scorer or captioner
        self.scorer_id = config.scorer.engine.model if config.scorer else config.served_model_id()
        # Asked and read as their families were trained (EditScore-7B's image labels, Thinking templates).
        self.captioner_family = config.captioner.engine.model_family()
        self.scorer_family = (config.scorer or config.captioner).engine.model_family()
        self.keys = KeyChecker(config.auth)
        self.quotas = KeyQuotas(config.quotas, self.keys.digests)
        self.proxies = parse_networks(config.trusted_proxies)
        self.created = int(time.time())

    def _authorize(self, request: Request) -> str | None:
        """The caller's key digest (None when auth is off) once its key and quota allow the request."""
        peer = request.client.host if request.client else None
        address = client_address(peer, request.headers.getlist("x-forwarded-for"), self.proxies)
        digest = self.keys.check(request.headers.get("authorization"), address)
        if digest is not None:
            self.quotas.admit(digest, address)
            _count_key_request(digest)
        return digest

    def _charge(self, digest: str | None, results: list[EngineResult]) -> None:
        """Count a served request's generated tokens against its key's quota."""
        tokens = sum(r.num_output_tokens for r in results)
        if digest is not None and tokens:
            self.quotas.charge(digest, tokens)
            _count_tokens(digest, tokens)

    # ------------------------------------------------------------------ operations

    @api.get("/healthz", summary="The process is up.")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", summary="The captioner engine answers (503 with Retry-After while it does not).")
    async def readyz(self) -> JSONResponse:
        try:
            await asyncio.wait_for(self.captioner.ready.remote(), timeout=5)
        except Exception as e:
            return JSONResponse(
                {"status": "not ready", "detail": type(e).__name__},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        return JSONResponse({"status": "ready", "model": self.config.served_model_id()})

    @api.get("/metrics", summary="Prometheus metrics of this replica.")
    async def metrics(self) -> Response:
        return Response(_metrics_text(), media_type=CONTENT_TYPE_LATEST)

    @api.get("/v1/models", response_model=ModelList, openapi_extra={"security": BEARER})
    async def models(self, request: Request) -> ModelList:
        self._authorize(request)
        return ModelList(data=[ModelCard(id=self.config.served_model_id(), created=self.created)])

    # ------------------------------------------------------------------ instructions

    @api.post("/v1/instructions", response_model=InstructionsResponse, openapi_extra=_INSTRUCTIONS_BODY)
    async def instructions(self, request: Request) -> InstructionsResponse:
        """Instruction candidates for a (source, target) pair: multipart files, base64 JSON, or URLs."""
        started = time.perf_counter()
        deadline = time.monotonic() + self.config.request_timeout_s
        digest = self._authorize(request)
        kind = _content_type(request, ("application/json", "multipart/form-data"))
        body = await self._read_body(request)
        if kind == "application/json":
            options, source, target = await self._json_pair(body)
        else:
            options, source, target = await self._multipart_pair(request, body)
        limits = self.config.limits
        if options.num_candidates > limits.max_candidates:
            raise RequestRefused(
                422, f"num_candidates {options.num_candidates} > this server's limit {limits.max_candidates}"
            )
        await asyncio.to_thread(_checked_pair, source, target, limits.images)
        decoded = time.perf_counter()

        request_id = uuid.uuid4().hex[:16]
        row = {"pair_id": request_id, "source": source, "target": target, "quarantine_reason": None}
        requests = caption_expand(row, options.num_candidates, self._sampling(options))
        for r in requests:
            _add_style(r, options)
        results = await self._answer(self.captioner, requests, deadline)
        self._charge(digest, results)
        model_id, in_prompt = self.config.served_model_id(), self.captioner_family.reasoning_in_prompt
        candidates = [make_candidate(request_id, result, model_id, in_prompt) for result in results]
        _count_candidates(candidates)
        captioned = time.perf_counter()

        scores: dict[str, dict[str, Any]] = {}
        score_s = None
        if options.score:
            scored_row = {**row, "candidates": candidates}
            editscore, family = self.config.editscore, self.scorer_family
            score_requests = score_expand(scored_row, editscore, family.image_label)
            score_results = await self._answer(self.scorer, score_requests, deadline)
            self._charge(digest, score_results)
            merged = score_merge(
                scored_row, score_results, editscore, self.scorer_id, family.reasoning_in_prompt
            )
            scores = {s["candidate_id"]: s for s in merged["scores"]}
            score_s = time.perf_counter() - captioned
        return InstructionsResponse(
            request_id=request_id,
            model=self.config.served_model_id(),
            prompt_version=PROMPT_VERSION,
            instruction=_best(candidates, scores),
            candidates=[_candidate_out(c, scores.get(c["candidate_id"])) for c in candidates],
            length=options.length,
            language=options.language,
            timings={
                "decode_s": decoded - started,
                "caption_s": captioned - decoded,
                "score_s": score_s,
                "total_s": time.perf_counter() - started,
            },
        )

    def _sampling(self, options: InstructionOptions) -> SamplingSettings:
        style = self.config.style
        temperature = options.temperature
        if temperature is None:
            temperature = style.temperature if options.num_candidates > 1 else 0.0
        tokens = {"short": style.short_tokens, "medium": style.medium_tokens, "long": style.long_tokens}
        return SamplingSettings(max_tokens=tokens[options.length], temperature=temperature)

    async def _json_pair(self, body: bytes) -> tuple[InstructionOptions, bytes, bytes]:
        payload = _validated(InstructionsJSON, _json(body))
        source = await self._image_bytes(payload.source, payload.source_url, "source")
        target = await self._image_bytes(payload.target, payload.target_url, "target")
        return (
            InstructionOptions(**payload.model_dump(include=set(InstructionOptions.model_fields))),
            source,
            target,
        )

    async def _multipart_pair(self, request: Request, body: bytes) -> tuple[InstructionOptions, bytes, bytes]:
        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=2, max_fields=16)
        except Exception as e:  # the multipart parser's own errors: malformed boundaries, too many parts
            raise RequestRefused(400, f"malformed multipart body: {getattr(e, 'detail', e)}") from e
        files = {}
        fields = {}
        for name, value in form.multi_items():
            if isinstance(value, str):
                fields[name] = value
            else:
                files[name] = await value.read()
        missing = [role for role in ("source", "target") if role not in files]
        if missing:
            raise RequestRefused(422, f"multipart body lacks the file part(s): {', '.join(missing)}")
        unknown = sorted(set(fields) - set(InstructionOptions.model_fields))
        if unknown:
            raise RequestRefused(422, f"unknown form field(s): {', '.join(unknown)}")
        return _validated(InstructionOptions, fields), files["source"], files["target"]

    async def _image_bytes(self, inline: str | None, url: str | None, role: str) -> bytes:
        if inline is not None:
            return _base64_image(inline, role)
        assert url is not None  # InstructionsJSON guarantees one of the two
        return await asyncio.to_thread(
            fetch_image, url, self.config.url_fetch, self.config.limits.max_body_bytes
        )

    # ------------------------------------------------------------------ OpenAI-compatible chat

    @api.post("/v1/chat/completions", response_model=ChatCompletion, openapi_extra=_CHAT_BODY)
    async def chat_completions(self, request: Request) -> ChatCompletion:
        """OpenAI chat completions with up to two `image_url` parts (data URLs; http(s) when enabled)."""
        deadline = time.monotonic() + self.config.request_timeout_s
        digest = self._authorize(request)
        _content_type(request, ("application/json",))
        chat = _validated(ChatRequest, _json(await self._read_body(request)))
        limits = self.config.limits
        if chat.model != self.config.served_model_id():
            raise RequestRefused(404, f"model {chat.model[:100]!r} is not served here; see /v1/models")
        if chat.stream:
            raise RequestRefused(400, "stream: true is not supported by this server")
        if chat.n > limits.max_candidates:
            raise RequestRefused(422, f"n {chat.n} > this server's limit {limits.max_candidates}")
        max_tokens = chat.max_completion_tokens or chat.max_tokens or self.config.style.medium_tokens
        if max_tokens > limits.max_tokens:
            raise RequestRefused(422, f"max_tokens {max_tokens} > this server's limit {limits.max_tokens}")
        messages, images = await self._chat_messages(chat)
        sampling = SamplingSettings(max_tokens=max_tokens, temperature=chat.temperature, top_p=chat.top_p)
        request_id = uuid.uuid4().hex
        requests = [
            EngineRequest(request_id=f"{request_id}:{i}", images=images, messages=messages, sampling=sampling)
            for i in range(chat.n)
        ]
        results = await self._answer(self.captioner, requests, deadline)
        self._charge(digest, results)
        choices = [
            ChatChoice(
                index=i,
                message=ChatChoiceMessage(content=r.text or ""),
                finish_reason=_finish_reason(r, max_tokens),
            )
            for i, r in enumerate(results)
        ]
        return ChatCompletion(
            id=f"chatcmpl-{request_id}",
            created=int(time.time()),
            model=chat.model,
            choices=choices,
            usage=ChatUsage(completion_tokens=sum(r.num_output_tokens for r in results)),
        )

    async def _chat_messages(self, chat: ChatRequest) -> tuple[list[dict[str, Any]], list[bytes]]:
        """Our engine's message form (one `{"type": "image"}` part per image) and the image bytes."""
        limits = self.config.limits
        messages, images, chars = [], [], 0
        for message in chat.messages:
            parts = [{"type": "text", "text": message.content}] if isinstance(message.content, str) else []
            for part in [] if isinstance(message.content, str) else message.content:
                if part.type == "text":
                    parts.append({"type": "text", "text": part.text})
                    continue
                if len(images) == 2:
                    raise RequestRefused(422, "at most two images per request (source and target)")
                images.append(await self._image_url(part.image_url.url, f"image {len(images) + 1}"))
                parts.append({"type": "image"})
            chars += sum(len(p.get("text") or "") for p in parts)
            messages.append({"role": message.role, "content": parts})
        if chars > limits.max_text_chars:
            raise RequestRefused(
                413, f"{chars} text characters > this server's limit {limits.max_text_chars}"
            )
        for i, data in enumerate(images):
            await asyncio.to_thread(_checked_image, data, limits.images, f"image {i + 1}")
        return messages, images

    async def _image_url(self, url: str, role: str) -> bytes:
        if url.startswith("data:"):
            return _base64_image(url, role)
        return await asyncio.to_thread(
            fetch_image, url, self.config.url_fetch, self.config.limits.max_body_bytes
        )

    # ------------------------------------------------------------------ shared

    async def _read_body(self, request: Request) -> bytes:
        """The body, refused with 413 as soon as it is known to exceed the limit."""
        limit = self.config.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise RequestRefused(413, f"body of {declared} bytes > this server's limit {limit}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise RequestRefused(413, f"body larger than this server's limit {limit}")
        return bytes(body)

    async def _answer(
        self, handle: DeploymentHandle, requests: list[EngineRequest], deadline: float
    ) -> list[EngineResult]:
        """All requests through an engine deployment at once; queue full → 503, deadline → 504."""
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

        calls = [handle.answer.remote(r.to_row()) for r in requests]
        try:
            rows = await asyncio.wait_for(
                asyncio.gather(*calls), timeout=max(0.0, deadline - time.monotonic())
            )
        except TimeoutError as e:
            for call in calls:
                call.cancel()
            raise RequestRefused(
                504, f"no answer within request_timeout_s={self.config.request_timeout_s}"
            ) from e
        except BackPressureError as e:
            retry = str(math.ceil(e.retry_after_s or 1))
            raise RequestRefused(503, "the engine queue is full; retry later", {"Retry-After": retry}) from e
        except DeploymentUnavailableError as e:
            raise RequestRefused(503, "the engine is not available yet", {"Retry-After": "10"}) from e
        results = [EngineResult.from_row(row) for row in rows]
        for r in results:
            if r.error and r.error.startswith(ENGINE_REJECTED):
                raise RequestRefused(422, r.error[:500])
            if r.error:
                raise RequestRefused(502, f"the engine failed on this request: {r.error[:300]}")
        return results


# ---------------------------------------------------------------------- application


def engine_deployment(name: str, config: EngineDeploymentConfig) -> Any:
    """An engine deployment with the engine's resources (GPUs per replica, vLLM environment)."""
    _, _, resources = VLLMEngine(config.engine).predictor()
    # Enough requests in the replica to fill the engine twice over (its running and its next batch).
    per_engine = config.engine.max_num_seqs if config.engine.async_engine else config.batching.max_batch_size
    return serve.deployment(
        EngineServer,
        name=name,
        ray_actor_options=resources,
        max_ongoing_requests=max(2 * per_engine, 8),
    ).bind(config)


def build_app(args: dict[str, Any]) -> serve.Application:
    """The Serve application for a `ServeConfig` (the `args:` of a Serve config file)."""
    config = args if isinstance(args, ServeConfig) else ServeConfig.model_validate(args)
    captioner = engine_deployment("Captioner", config.captioner)
    scorer = engine_deployment("Scorer", config.scorer) if config.scorer else None
    return CaptionerAPI.bind(config, captioner, scorer)
