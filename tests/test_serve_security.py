"""Serve's key throttling and per-key quotas on their own, with a clock the test moves (no server).

The same rules run over HTTP against the real app in `test_serve.py` (`test_wrong_keys_*`,
`test_a_key_over_its_quota_*`).
"""

from __future__ import annotations

import pytest

from editcaption.serving.config import AuthConfig, KeyThrottleConfig, QuotaConfig
from editcaption.serving.security import KeyChecker, KeyQuotas, RequestRefused, SlidingWindow, hash_key

RIGHT = "ec-AAAAAAAArightkey-0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _checker(monkeypatch: pytest.MonkeyPatch, clock: Clock, **throttle: float) -> KeyChecker:
    monkeypatch.setenv("EDITCAPTION_API_KEY_HASHES", hash_key(RIGHT))
    return KeyChecker(AuthConfig(throttle=KeyThrottleConfig(**throttle)), clock=clock)


def _status(checker: KeyChecker, key: str, address: str = "198.51.100.1") -> int:
    try:
        checker.check(f"Bearer {key}", address)
    except RequestRefused as e:
        return e.status
    return 200


def test_wrong_keys_for_one_prefix_get_429_and_the_lock_ends_with_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    checker = _checker(monkeypatch, clock, window_s=60)
    codes = []
    for i in range(20):
        codes.append(_status(checker, f"ec-AAAAAAAAguess-{i}"))
        clock.now += 0.5
    assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}  # the 6th attempt is refused unchecked
    with pytest.raises(RequestRefused) as refused:
        checker.check(f"Bearer {RIGHT}", "198.51.100.1")  # the right key, same prefix, still locked
    assert refused.value.status == 429
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
    assert refused.value.event["scope"] == "key_prefix" and RIGHT not in str(refused.value.event)
    clock.now += 60
    assert checker.check(f"Bearer {RIGHT}", "198.51.100.1") == hash_key(RIGHT)


def test_wrong_keys_from_one_address_are_throttled_whatever_their_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    checker = _checker(monkeypatch, clock, window_s=30, max_failures_per_address=8)
    codes = [_status(checker, f"ec-{i:08d}-guess", "203.0.113.5") for i in range(20)]
    assert codes[:8] == [401] * 8 and set(codes[8:]) == {429}
    assert _status(checker, RIGHT, "203.0.113.5") == 429
    assert _status(checker, RIGHT, "203.0.113.6") == 200  # another address is not affected
    clock.now += 30.1
    assert _status(checker, RIGHT, "203.0.113.5") == 200


def test_missing_and_malformed_keys_are_401_and_not_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    checker = _checker(monkeypatch, Clock(), max_failures_per_address=1)
    for header in (None, "Basic abc", "Bearer "):
        with pytest.raises(RequestRefused) as refused:
            checker.check(header, "192.0.2.1")
        assert refused.value.status == 401 and refused.value.event["reason"] in ("missing", "malformed")
    assert _status(checker, RIGHT, "192.0.2.1") == 200


def test_sliding_window_retry_after_counts_weights() -> None:
    clock = Clock()
    window = SlidingWindow(60, clock)
    window.add("k", 40)
    clock.now += 10
    window.add("k", 70)
    assert window.total("k") == 110
    assert window.retry_after("k", 200) is None
    assert window.retry_after("k", 100) == pytest.approx(50)  # the first 40 must expire
    assert window.retry_after("k", 50) == pytest.approx(60)  # 70 alone is over 50: both must expire
    clock.now += 50
    assert window.total("k") == 70


def test_sliding_window_memory_is_bounded() -> None:
    clock = Clock()
    window = SlidingWindow(1, clock, max_names=100)
    for i in range(1000):
        window.add(f"name-{i}")
        clock.now += 0.01
    assert len(window.events) <= 100


def test_a_key_over_its_request_quota_gets_429_with_retry_after() -> None:
    clock = Clock()
    digest = hash_key(RIGHT)
    quotas = KeyQuotas(QuotaConfig(requests_per_minute=3, tokens_per_minute=0), frozenset({digest}), clock)
    for _ in range(3):
        quotas.admit(digest)
        clock.now += 1
    with pytest.raises(RequestRefused) as refused:
        quotas.admit(digest)
    assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "57"
    assert refused.value.event == {
        "event": "quota_refused",
        "key_id": digest[:12],
        "limit": "requests",
        "per_minute": 3,
        "retry_after_s": 57.0,
        "address": "unknown",
    }
    clock.now += 57  # the first request is a minute old
    quotas.admit(digest)


def test_a_key_over_its_token_quota_gets_429_and_per_key_limits_apply() -> None:
    clock = Clock()
    small, big = hash_key(RIGHT), hash_key("ec-other-key")
    cfg = QuotaConfig(
        requests_per_minute=100, tokens_per_minute=1000, keys={small[:10]: {"tokens_per_minute": 50}}
    )
    quotas = KeyQuotas(cfg, frozenset({small, big}), clock)
    quotas.admit(small)
    quotas.charge(small, 60)  # served: the request that crosses the budget is answered
    with pytest.raises(RequestRefused) as refused:
        quotas.admit(small)
    assert refused.value.event["limit"] == "tokens" and refused.value.event["per_minute"] == 50
    quotas.admit(big)
    quotas.charge(big, 60)
    quotas.admit(big)  # the default 1000 tokens
    with pytest.raises(ValueError, match="matches 0"):
        KeyQuotas(QuotaConfig(keys={"00000000": {}}), frozenset({small}), clock)
    with pytest.raises(ValueError, match="hex"):
        QuotaConfig(keys={"not-hex!": {}})
