"""The shared Redis limiter: atomic buckets on Redis's clock, one limit across server processes,
and per-process limits (never none) while Redis is away."""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from neocloud.db.engine import Database
from neocloud.db.migrate import upgrade
from neocloud.kernel.clock import SystemClock
from neocloud.kernel.errors import RateLimited
from neocloud.studio.ratelimit import RateLimit, RedisLimiter

from .servers import gateway_servers


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so runs and tests never share buckets."""
    return f"neocloud-test:{os.getpid()}:{secrets.token_hex(4)}:"


def test_buckets_in_redis_refuse_past_the_limit_with_retry_after(
    redis_url: str, prefix: str
) -> None:
    limiter = RedisLimiter(redis_url, RateLimit(requests_per_minute=10), prefix=prefix)
    for _ in range(10):
        limiter.acquire("key_a", tokens=1)
    with pytest.raises(RateLimited) as caught:
        limiter.acquire("key_a", tokens=1)
    assert caught.value.code == "rate_limit_exceeded"
    assert 1 <= caught.value.retry_after_s <= 6  # one request back every 6 s
    limiter.acquire("key_b", tokens=1)  # per key
    assert not limiter.degraded


def test_tokens_per_minute_and_a_per_call_limit(redis_url: str, prefix: str) -> None:
    limiter = RedisLimiter(redis_url, RateLimit(tokens_per_minute=100), prefix=prefix)
    limiter.acquire("k", tokens=90)
    with pytest.raises(RateLimited) as caught:
        limiter.acquire("k", tokens=30)
    assert caught.value.retry_after_s >= 12  # ~20 tokens missing at 100 per minute
    with pytest.raises(RateLimited):
        limiter.acquire("k", tokens=101)  # more than a minute's allowance: never
    # A key's own override (the operator's) replaces the default for that call.
    tight = RateLimit(requests_per_minute=1, tokens_per_minute=1000)
    limiter.acquire("other", tokens=5, limit=tight)
    with pytest.raises(RateLimited):
        limiter.acquire("other", tokens=5, limit=tight)


def test_concurrent_callers_never_overdraw(redis_url: str, prefix: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    limiters = [RedisLimiter(redis_url, RateLimit(requests_per_minute=25), prefix=prefix)] * 2

    def take(i: int) -> bool:
        try:
            limiters[i % 2].acquire("shared", tokens=1)
        except RateLimited:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        passed = sum(pool.map(take, range(60)))
    assert passed == 25


class _Time:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_redis_down_fails_open_to_per_process_limits() -> None:
    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    now = _Time()
    limiter = RedisLimiter(dead, RateLimit(requests_per_minute=3), retry_down_s=5, now=now)
    for _ in range(3):
        limiter.acquire("k", tokens=1)  # served, limited in this process
    assert limiter.degraded
    with pytest.raises(RateLimited):
        limiter.acquire("k", tokens=1)  # still limited: fail-open is not unlimited
    now.t = 4.0
    started = time.monotonic()
    with pytest.raises(RateLimited):
        limiter.acquire("k", tokens=1)
    assert time.monotonic() - started < 0.05  # within retry_down_s Redis is not tried again
    now.t = 30.0  # the buckets refilled; Redis is tried again (and is still away)
    limiter.acquire("k", tokens=1)
    assert limiter.degraded


# -- two server processes, one Redis ---------------------------------------------------------


def _admin_key(url: str) -> str:
    from neocloud.tenancy.service import bootstrap_operator

    db = Database.from_url(url)
    try:
        upgrade(db)
        key = bootstrap_operator(db=db, clock=SystemClock())
    finally:
        db.dispose()
    assert key is not None
    return key


@pytest.fixture
def servers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[list[str], str]]:
    """Two gateway processes on one database; ``request.param``: extra environment."""
    db_url = f"sqlite:///{tmp_path / 'neocloud.db'}"
    key = _admin_key(db_url)
    env = {
        **os.environ,
        "NEOCLOUD_DATABASE_URL": db_url,
        "NEOCLOUD_DATA_DIR": str(tmp_path),
        "NEOCLOUD_STUDIO_REQUESTS_PER_MINUTE": "10",
        **request.param,
    }
    env.pop("NEOCLOUD_REDIS_URL", None)
    env.update(request.param)
    with gateway_servers(env, tmp_path) as urls:
        yield urls, key


def _alternate(urls: list[str], key: str, n: int) -> list[tuple[int, int]]:
    """``n`` completions alternating between the servers: (server, status) of each."""
    body = {"model": "neocloud/echo", "prompt": "x", "max_tokens": 1}
    headers = {"Authorization": f"Bearer {key}"}
    out = []
    with httpx.Client(timeout=10) as http:
        for i in range(n):
            answer = http.post(f"{urls[i % 2]}/v1/completions", json=body, headers=headers)
            if answer.status_code == 429:
                assert answer.json()["error"]["code"] == "rate_limit_exceeded"
                assert int(answer.headers["retry-after"]) >= 1
            out.append((i % 2, answer.status_code))
    return out


REDIS_URL = os.environ.get("NEOCLOUD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")  # as conftest
_PREFIX = f"neocloud-test:{os.getpid()}:{secrets.token_hex(4)}:"


@pytest.mark.parametrize(
    "servers",
    [{"NEOCLOUD_REDIS_URL": REDIS_URL, "NEOCLOUD_STUDIO_REDIS_PREFIX": _PREFIX}],
    indirect=True,
)
def test_two_processes_share_one_limit_through_redis(
    redis_url: str, servers: tuple[list[str], str]
) -> None:
    urls, key = servers
    results = _alternate(urls, key, 20)
    passed = [server for server, status in results if status == 200]
    assert len(passed) == 10  # 10 per minute in all, not 10 per process
    assert set(passed) == {0, 1}  # both processes served some of them
    assert [status for _, status in results[10:]] == [429] * 10


@pytest.mark.parametrize("servers", [{}], indirect=True)
def test_without_redis_each_process_limits_on_its_own(servers: tuple[list[str], str]) -> None:
    urls, key = servers
    results = _alternate(urls, key, 22)
    assert sum(status == 200 for _, status in results) == 20  # 10 in each process
    assert [status for _, status in results[20:]] == [429, 429]


def test_prefix_keeps_runs_apart(redis_url: str) -> None:
    a = RedisLimiter(
        redis_url, RateLimit(requests_per_minute=1), prefix=f"t:{secrets.token_hex(4)}:"
    )
    b = RedisLimiter(
        redis_url, RateLimit(requests_per_minute=1), prefix=f"t:{secrets.token_hex(4)}:"
    )
    a.acquire("k", tokens=1)
    b.acquire("k", tokens=1)
    with pytest.raises(RateLimited):
        a.acquire("k", tokens=1)
