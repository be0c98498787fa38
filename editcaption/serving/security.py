"""API keys and URL fetching: the two ways a request reaches beyond its own body.

Keys are stored as sha256 digests only, so a leaked key file does not leak keys. URL images are
fetched only from allow-listed hosts, and only when every address the host resolves to is public;
the connection then goes to the address that was checked (with the host name kept for TLS), so a DNS
answer that changes between the check and the connection cannot redirect the fetch inward.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import socket
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from editcaption.serving.config import AuthConfig, UrlFetchConfig


class RequestRefused(Exception):
    """A request the endpoint will not serve: `status` is the HTTP status, `reason` says why."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


def hash_key(key: str) -> str:
    """The stored form of an API key."""
    return hashlib.sha256(key.encode()).hexdigest()


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


class KeyChecker:
    """Checks `Authorization: Bearer <key>` against the stored digests."""

    def __init__(self, cfg: AuthConfig) -> None:
        self.disabled = cfg.mode == "disabled"
        self.digests = frozenset() if self.disabled else load_key_hashes(cfg)

    def check(self, authorization: str | None) -> None:
        """Raise RequestRefused (401, as RFC 6750 says for a missing or invalid token) unless auth is
        disabled or the key is known."""
        if self.disabled:
            return
        challenge = {"WWW-Authenticate": "Bearer"}
        if not authorization:
            raise RequestRefused(401, "missing API key: send `Authorization: Bearer <key>`", challenge)
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise RequestRefused(401, "the Authorization header must be `Bearer <key>`", challenge)
        digest = hash_key(key.strip())
        # Compare against every digest so the time taken does not say which one nearly matched.
        if not any(hmac.compare_digest(digest, known) for known in self.digests):
            raise RequestRefused(401, "invalid API key", {"WWW-Authenticate": 'Bearer error="invalid_token"'})


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
