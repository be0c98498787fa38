"""API keys, their throttling and quotas, and URL fetching: the ways a request reaches beyond its body.

Keys are stored as sha256 digests only, so a leaked key file does not leak keys. Wrong keys are
counted per key prefix and per client address in sliding windows; past the limit every attempt from
there is refused with 429 before its key is looked at, so guessing cannot go faster than the limit.
Each right key has request and generated-token budgets per minute. Refusals carry a structured
`event` (never the key: a key is named by `key_id`, the start of its digest) that the app logs and
counts. The windows live in the ingress replica's memory. URL images are
fetched only from allow-listed hosts, and only when every address the host resolves to is public;
the connection then goes to the address that was checked (with the host name kept for TLS), so a DNS
answer that changes between the check and the connection cannot redirect the fetch inward.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from editcaption.serving.config import AuthConfig, QuotaConfig, UrlFetchConfig


class RequestRefused(Exception):
    """A request the endpoint will not serve: `status` is the HTTP status, `reason` says why."""

    def __init__(
        self,
        status: int,
        reason: str,
        headers: dict[str, str] | None = None,
        event: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}
        self.event = event  # what to log and count about this refusal (auth, throttling, quotas)


def hash_key(key: str) -> str:
    """The stored form of an API key."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_id(digest: str) -> str:
    """How logs, metrics and quota settings name a key: the first 12 hex characters of its digest."""
    return digest[:12]


def new_key() -> tuple[str, str]:
    """A fresh random key and its digest (give the key to the client, store the digest)."""
    key = "ec-" + secrets.token_urlsafe(32)
    return key, hash_key(key)


def load_key_hashes(cfg: AuthConfig) -> frozenset[str]:
    """Digests from the config's file and environment variable; malformed lines are errors."""
    lines: list[str] = []
    if cfg.key_hashes_file:
        path = Path(cfg.key_hashes_file)
        if not path.is_file():
            raise ValueError(f"auth.key_hashes_file not found: {path}")
        lines += path.read_text().splitlines()
    lines += os.environ.get(cfg.key_hashes_env, "").split(",")
    digests = set()
    for line in lines:
        digest = line.split("#", 1)[0].strip().lower()
        if not digest:
            continue
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a sha256 hex digest in the API key list: {digest[:12]}...")
        digests.add(digest)
    return frozenset(digests)


class SlidingWindow:
    """Weighted events per name within the last `window_s` seconds (failures, requests, tokens).

    Memory stays bounded: names whose events have all expired are dropped once `max_names` is
    exceeded, and if that is not enough the names seen longest ago go first.
    """

    def __init__(
        self, window_s: float, clock: Callable[[], float] = time.monotonic, max_names: int = 100_000
    ) -> None:
        self.window_s, self.clock, self.max_names = window_s, clock, max_names
        self.events: dict[str, deque[tuple[float, float]]] = {}
        self.totals: dict[str, float] = {}

    def _expire(self, name: str, now: float) -> deque[tuple[float, float]] | None:
        events = self.events.get(name)
        while events and events[0][0] <= now - self.window_s:
            self.totals[name] -= events.popleft()[1]
        return events

    def add(self, name: str, weight: float = 1.0) -> None:
        now = self.clock()
        events = self._expire(name, now)
        if events is None:
            if len(self.events) >= self.max_names:
                self._shrink(now)
            events = self.events[name] = deque()
            self.totals[name] = 0.0
        events.append((now, weight))
        self.totals[name] += weight

    def total(self, name: str) -> float:
        return self.totals[name] if self._expire(name, self.clock()) else 0.0

    def retry_after(self, name: str, limit: float) -> float | None:
        """Seconds until the total falls below `limit`; None if it is below already."""
        now = self.clock()
        events = self._expire(name, now)
        if not events or self.totals[name] < limit:
            return None
        excess = self.totals[name] - limit
        for at, weight in events:
            excess -= weight
            if excess < 0:
                return max(at + self.window_s - now, 0.0)
        return self.window_s  # unreachable: the events sum to the total

    def clear(self, name: str) -> None:
        self.events.pop(name, None)
        self.totals.pop(name, None)

    def _shrink(self, now: float) -> None:
        for name in [n for n in self.events if not self._expire(n, now)]:
            self.clear(name)
        for name in list(self.events)[: max(0, len(self.events) - self.max_names + 1)]:
            self.clear(name)


def _retry_header(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class KeyChecker:
    """Checks `Authorization: Bearer <key>` against the stored digests, throttling wrong keys."""

    def __init__(self, cfg: AuthConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.disabled = cfg.mode == "disabled"
        self.digests = frozenset() if self.disabled else load_key_hashes(cfg)
        self.throttle = cfg.throttle
        self.by_prefix = SlidingWindow(cfg.throttle.window_s, clock)
        self.by_address = SlidingWindow(cfg.throttle.window_s, clock)

    def check(self, authorization: str | None, address: str = "unknown") -> str | None:
        """The key's digest (None when auth is disabled), or RequestRefused: 401 for a missing or
        invalid key (as RFC 6750 says), 429 while the key's prefix or the address is throttled."""
        if self.disabled:
            return None
        challenge = {"WWW-Authenticate": "Bearer"}
        event = {"event": "auth_refused", "address": address}
        if not authorization:
            raise RequestRefused(
                401,
                "missing API key: send `Authorization: Bearer <key>`",
                challenge,
                {**event, "reason": "missing"},
            )
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise RequestRefused(
                401,
                "the Authorization header must be `Bearer <key>`",
                challenge,
                {**event, "reason": "malformed"},
            )
        limits = self.throttle
        prefix = key[: limits.key_prefix_chars]
        for window, name, limit, scope in (
            (self.by_address, address, limits.max_failures_per_address, "address"),
            (self.by_prefix, prefix, limits.max_failures_per_key_prefix, "key_prefix"),
        ):
            wait = window.retry_after(name, limit)
            if wait is not None:
                raise RequestRefused(
                    429,
                    f"too many wrong API keys from this {scope.replace('_', ' ')}; retry later",
                    _retry_header(wait),
                    {**event, "event": "auth_throttled", "scope": scope, "retry_after_s": round(wait, 1)},
                )
        digest = hash_key(key)
        # Compare against every digest so the time taken does not say which one nearly matched.
        if not any(hmac.compare_digest(digest, known) for known in self.digests):
            self.by_address.add(address)
            self.by_prefix.add(prefix)
            raise RequestRefused(
                401,
                "invalid API key",
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
                {**event, "reason": "invalid_key", "key_id": key_id(digest)},
            )
        self.by_prefix.clear(prefix)
        return digest


class KeyQuotas:
    """Requests and generated tokens per key and minute (`QuotaConfig`), in sliding 60 s windows."""

    WINDOW_S = 60.0

    def __init__(
        self, cfg: QuotaConfig, digests: frozenset[str], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.default = (cfg.requests_per_minute, cfg.tokens_per_minute)
        self.limits: dict[str, tuple[int, int]] = {}
        for kid, quota in cfg.keys.items():
            matches = [d for d in digests if d.startswith(kid)]
            if len(matches) != 1:
                raise ValueError(
                    f"quotas.keys: {kid!r} matches {len(matches)} of the configured key digests (needs exactly 1)"
                )
            self.limits[matches[0]] = (
                self.default[0] if quota.requests_per_minute is None else quota.requests_per_minute,
                self.default[1] if quota.tokens_per_minute is None else quota.tokens_per_minute,
            )
        self.requests = SlidingWindow(self.WINDOW_S, clock)
        self.tokens = SlidingWindow(self.WINDOW_S, clock)

    def admit(self, digest: str, address: str = "unknown") -> None:
        """Count one request for the key, or RequestRefused (429 + Retry-After) if a budget is spent."""
        requests, tokens = self.limits.get(digest, self.default)
        for window, limit, what in ((self.requests, requests, "requests"), (self.tokens, tokens, "tokens")):
            wait = window.retry_after(digest, limit) if limit else None
            if wait is not None:
                raise RequestRefused(
                    429,
                    f"this API key used its {limit} {'generated tokens' if what == 'tokens' else what} "
                    "per minute; retry later",
                    _retry_header(wait),
                    {
                        "event": "quota_refused",
                        "key_id": key_id(digest),
                        "limit": what,
                        "per_minute": limit,
                        "retry_after_s": round(wait, 1),
                        "address": address,
                    },
                )
        self.requests.add(digest)

    def charge(self, digest: str, tokens: int) -> None:
        """Add the tokens a served request generated to the key's budget."""
        if tokens > 0:
            self.tokens.add(digest, tokens)


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve_public(host: str, port: int) -> str:
    """The first address of `host`, after checking that every address it resolves to is public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise RequestRefused(422, f"image URL host {host!r} does not resolve: {e}") from e
    addresses = [info[4][0] for info in infos]
    private = [a for a in addresses if not _public(a)]
    if not addresses or private:
        raise RequestRefused(
            422, f"image URL host {host!r} resolves to a non-public address ({', '.join(private)}): refused"
        )
    return addresses[0]


def fetch_image(url: str, cfg: UrlFetchConfig, max_bytes: int) -> bytes:
    """The bytes at an allow-listed public http(s) URL, or RequestRefused saying why not."""
    if not cfg.enabled:
        raise RequestRefused(422, "image URLs are disabled on this server; send the image bytes instead")
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise RequestRefused(422, f"image URL must be http(s) with a host: {url[:100]!r}")
    if host.lower() not in {h.lower() for h in cfg.allow_hosts}:
        raise RequestRefused(422, f"image URL host {host!r} is not on this server's allow-list")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = resolve_public(host, port)
    literal = f"[{address}]" if ":" in address else address
    pinned = urlunsplit((parts.scheme, f"{literal}:{port}", parts.path or "/", parts.query, ""))
    try:
        with httpx.stream(
            "GET",
            pinned,
            headers={"Host": parts.netloc.rsplit("@", 1)[-1]},
            extensions={"sni_hostname": host},
            timeout=cfg.timeout_s,
            follow_redirects=False,
        ) as response:
            if response.status_code != 200:
                raise RequestRefused(422, f"image URL answered HTTP {response.status_code}")
            data = bytearray()
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) > max_bytes:
                    raise RequestRefused(413, f"image at URL is larger than {max_bytes} bytes")
            return bytes(data)
    except httpx.HTTPError as e:
        raise RequestRefused(422, f"image URL could not be fetched: {type(e).__name__}") from e
