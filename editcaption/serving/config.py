"""What a Serve application is made of: `ServeConfig` is the `args:` block of a Serve config file.

Ray Serve's own keys (replicas, autoscaling, queue limits) stay in the file's `deployments:` list,
where `serve run` / `serve deploy` read them; everything about the captioner's behaviour is here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from editcaption.engines.vllm_engine import VLLMEngineConfig
from editcaption.images import ImagePolicy
from editcaption.prompts.scoring import EditScoreConfig
from editcaption.proxies import parse_networks

MODEL_ENV = "EDITCAPTION_SERVE_MODEL"


class BatchingConfig(BaseModel):
    """Dynamic batching into a synchronous engine (`serving/batcher.py`, used with the engine's
    `async_engine: false`): each engine call takes every request waiting when the engine becomes free,
    up to `max_batch_size`. The async engine (the default) schedules requests itself, up to its
    `max_num_seqs`."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(
        16, ge=1, description="Most engine requests answered in one engine call; 1 turns batching off."
    )
    batch_wait_timeout_s: float = Field(
        0.01,
        ge=0,
        description="How long a request that finds the engine idle waits for company before it runs; "
        "requests arriving while the engine is busy wait for it anyway and join the next call.",
    )


class EngineDeploymentConfig(BaseModel):
    """One vLLM engine behind a Serve deployment, and how requests are batched into it."""

    model_config = ConfigDict(extra="forbid")

    engine: VLLMEngineConfig
    batching: BatchingConfig = Field(default_factory=BatchingConfig)


class KeyThrottleConfig(BaseModel):
    """Wrong API keys: too many within `window_s` from one key prefix or one client address, and every
    request with a key from there gets 429 with `Retry-After` (the key is not even checked) until the
    oldest of those failures is `window_s` old. A right key clears its prefix's failures."""

    model_config = ConfigDict(extra="forbid")

    max_failures_per_key_prefix: int = Field(
        5, ge=1, description="Wrong keys starting with the same `key_prefix_chars` characters."
    )
    max_failures_per_address: int = Field(20, ge=1, description="Wrong keys from one client address.")
    window_s: float = Field(900.0, gt=0, description="How long a failure counts (and a lock lasts at most).")
    key_prefix_chars: int = Field(
        11, ge=1, description="Characters of a key that make its prefix (`ec-` and 8 random ones)."
    )


class AuthConfig(BaseModel):
    """API keys: `Authorization: Bearer <key>`; only sha256 hex digests of keys are stored."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["required", "disabled"] = Field(
        "required", description="`disabled` must be written out: without keys every /v1 call is refused."
    )
    key_hashes_file: str | None = Field(
        None, description="File with one sha256 hex digest of a key per line (`#` comments allowed)."
    )
    key_hashes_env: str = Field(
        "EDITCAPTION_API_KEY_HASHES", description="Environment variable with comma-separated digests."
    )
    throttle: KeyThrottleConfig = Field(default_factory=KeyThrottleConfig)


class KeyQuota(BaseModel):
    """One key's own limits; an unset field takes the `quotas:` value."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(None, ge=0)
    tokens_per_minute: int | None = Field(None, ge=0)


class QuotaConfig(BaseModel):
    """What one API key may ask for per minute (a sliding 60 s window); beyond it 429 with `Retry-After`.
    Generated tokens are counted once a request is answered, so the request that crosses the limit
    is served and the next one is refused. Counted per ingress replica."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int = Field(600, ge=0, description="Requests per key and minute; 0 = no limit.")
    tokens_per_minute: int = Field(
        120_000,
        ge=0,
        description="Generated tokens (captions, scores, chat) per key and minute; 0 = no limit.",
    )
    keys: dict[str, KeyQuota] = Field(
        default_factory=dict,
        description="Per-key limits by key id (the first 8+ hex characters of the key's sha256 digest).",
    )

    @field_validator("keys")
    @classmethod
    def _key_ids(cls, keys: dict[str, KeyQuota]) -> dict[str, KeyQuota]:
        bad = [k for k in keys if len(k) < 8 or len(k) > 64 or any(c not in "0123456789abcdef" for c in k)]
        if bad:
            raise ValueError(f"quota key ids must be 8-64 lower-case hex characters of a key digest: {bad}")
        return keys


class UrlFetchConfig(BaseModel):
    """Images given as http(s) URLs; off by default, and never from private or loopback addresses."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        False, description="Accept `source_url` / `target_url` and http(s) image_url parts."
    )
    allow_hosts: list[str] = Field(
        default_factory=list, description="Exact host names that may be fetched from; empty allows none."
    )
    timeout_s: float = Field(10.0, gt=0, description="Connect + read timeout per image.")


class LimitsConfig(BaseModel):
    """Bounds on what one request may ask for; anything beyond is refused with a 4xx and a reason."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(25_000_000, ge=1024, description="Request body size (413 beyond).")
    max_candidates: int = Field(4, ge=1, description="Instructions per request (`num_candidates`, `n`).")
    max_tokens: int = Field(512, ge=1, description="Largest `max_tokens` a chat request may ask for.")
    max_text_chars: int = Field(4000, ge=1, description="Total text characters in a chat request.")
    images: ImagePolicy = Field(
        default_factory=lambda: ImagePolicy(max_pixels=16_000_000, reject_identical=False),
        description="Which uploaded images are accepted (pixels, sides, aspect, pair mismatch).",
    )


class StyleConfig(BaseModel):
    """Token budgets per `length` option of /v1/instructions."""

    model_config = ConfigDict(extra="forbid")

    short_tokens: int = Field(48, ge=1)
    medium_tokens: int = Field(96, ge=1)
    long_tokens: int = Field(192, ge=1)
    temperature: float = Field(
        0.7, ge=0, description="Default sampling temperature when several candidates are asked for."
    )


class ServeConfig(BaseModel):
    """The captioner endpoint: engines, limits, safety. The model path may come from EDITCAPTION_SERVE_MODEL."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_id: str | None = Field(
        None,
        description="Name clients see in /v1/models and send as `model`; default: the model folder name.",
    )
    captioner: EngineDeploymentConfig
    scorer: EngineDeploymentConfig | None = Field(
        None, description="EditScore model for `score: true`; None scores with the captioner's engine."
    )
    editscore: EditScoreConfig = Field(default_factory=EditScoreConfig)
    style: StyleConfig = Field(default_factory=StyleConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    url_fetch: UrlFetchConfig = Field(default_factory=UrlFetchConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    quotas: QuotaConfig = Field(default_factory=QuotaConfig)
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="CIDRs of reverse proxies whose X-Forwarded-For is believed; empty: the peer is the client.",
    )
    request_timeout_s: float = Field(120.0, gt=0, description="A request still waiting after this gets 504.")

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, cidrs: list[str]) -> list[str]:
        parse_networks(cidrs)
        return cidrs

    @model_validator(mode="after")
    def _model_from_env(self) -> ServeConfig:
        """EDITCAPTION_SERVE_MODEL replaces the captioner's model (tests and demos build theirs)."""
        engine = self.captioner.engine
        model = os.environ.get(MODEL_ENV) or engine.model
        if Path(model).exists():
            model = str(Path(model).resolve())  # replicas may start in another working directory
        self.captioner.engine = engine.model_copy(update={"model": model})
        if self.scorer and Path(self.scorer.engine.model).exists():
            scorer = str(Path(self.scorer.engine.model).resolve())
            self.scorer.engine = self.scorer.engine.model_copy(update={"model": scorer})
        if self.model_id is None:
            self.model_id = Path(model).name or model
        keys = self.auth.key_hashes_file
        if keys and Path(keys).exists():
            self.auth.key_hashes_file = str(Path(keys).resolve())
        return self

    def served_model_id(self) -> str:
        return self.model_id or self.captioner.engine.model
