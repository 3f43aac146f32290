"""Rate limits per key: token buckets, 429 with Retry-After, and the openai client's retry."""

from __future__ import annotations

import time

import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neocloud.kernel.errors import RateLimited
from neocloud.studio.ratelimit import InProcessLimiter, RateLimit


class _Time:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class _Paused:
    """A monotonic clock that stands still until ``resume``, then runs at real speed."""

    def __init__(self) -> None:
        self.at = time.monotonic()
        self.since: float | None = None

    def resume(self) -> None:
        self.since = time.monotonic()

    def __call__(self) -> float:
        return self.at if self.since is None else self.at + time.monotonic() - self.since


def test_buckets_refill_with_time() -> None:
    now = _Time()
    limiter = InProcessLimiter(RateLimit(requests_per_minute=2, tokens_per_minute=100), now=now)
    limiter.acquire("k", tokens=10)
    limiter.acquire("k", tokens=10)
    with pytest.raises(RateLimited) as caught:
        limiter.acquire("k", tokens=10)
    assert caught.value.retry_after_s == 30  # one request back every 30 s
    limiter.acquire("other", tokens=10)  # per key
    now.t = 30
    limiter.acquire("k", tokens=10)  # one request refilled


def test_tokens_per_minute_are_limited_too() -> None:
    now = _Time()
    limiter = InProcessLimiter(RateLimit(tokens_per_minute=100), now=now)
    limiter.acquire("k", tokens=90)
    now.t = 6  # 10 tokens refilled: 20 in the bucket
    with pytest.raises(RateLimited) as caught:
        limiter.acquire("k", tokens=30)
    assert caught.value.retry_after_s == 6  # 10 missing tokens at 100 per minute


def test_a_request_above_the_minute_allowance_is_refused() -> None:
    limiter = InProcessLimiter(RateLimit(tokens_per_minute=100))
    with pytest.raises(RateLimited):
        limiter.acquire("k", tokens=101)


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_429_carries_retry_after_and_the_client_retries(app: FastAPI, admin_key: str) -> None:
    # 60 requests per minute: the retry waits ~1 s. The limiter's clock stands still while the
    # bucket is emptied (however slow the machine), then runs at real speed from there.
    clock = _Paused()
    limiter = InProcessLimiter(RateLimit(requests_per_minute=60), now=clock)
    app.state.studio.limiter = limiter
    limiter.acquire("warm", tokens=1)
    with TestClient(app) as http:
        body = {"model": "neocloud/echo", "prompt": "x", "max_tokens": 1}
        headers = {"Authorization": f"Bearer {admin_key}"}
        statuses = [http.post("/v1/completions", json=body, headers=headers) for _ in range(61)]
        refused = statuses[-1]
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        client = openai.OpenAI(
            base_url="http://testserver/v1", api_key=admin_key, http_client=http, max_retries=0
        )
        with pytest.raises(openai.RateLimitError):
            client.completions.create(model="neocloud/echo", prompt="x", max_tokens=1)
        clock.resume()
        started = time.monotonic()
        out = client.with_options(max_retries=2).completions.create(
            model="neocloud/echo", prompt="x", max_tokens=1
        )
        assert out.choices[0].text == "x"
        assert time.monotonic() - started >= 0.5  # it waited as told before retrying
