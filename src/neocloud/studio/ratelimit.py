"""Per-key rate limits: requests and tokens per minute, as token buckets.

Each key has two buckets that hold up to a minute's allowance and refill continuously. A request
takes one request and its token estimate (prompt tokens plus the completion limit, as OpenAI
counts) from both or from neither; a refusal is a 429 ``rate_limit_exceeded`` with the seconds
until both buckets could serve it in ``Retry-After``.

Two limiters share that contract (``acquire``, which raises); both answer ``take`` too, which
raises nothing and tells what is left (the platform API's limiter, ``neocloud.api.ratelimit``,
builds its own answer and ``X-RateLimit-*`` headers from it; its second bucket counts writes):

* ``InProcessLimiter`` (the default): buckets in this process's memory. With several API
  processes each enforces the limit on its own.
* ``RedisLimiter`` (when ``NEOCLOUD_REDIS_URL`` is set): the buckets live in Redis and one Lua
  script refills, checks and takes from both atomically, on Redis's clock, so every process
  behind the same Redis shares one limit per key.

When Redis cannot be reached the Redis limiter **fails open to the in-process limiter**: each
process goes on enforcing the limit locally (so a key gets at most N times its limit across N
processes, never unlimited), logs the outage once, and tries Redis again after
``retry_down_s``. Refusing every request because the limiter's store is away would turn a Redis
outage into a full outage of the inference API; the local fallback keeps the damage bounded.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from neocloud.kernel.errors import RateLimited

log = logging.getLogger("neocloud.studio.ratelimit")


@dataclass(frozen=True, slots=True)
class RateLimit:
    requests_per_minute: int = 600
    tokens_per_minute: int = 1_000_000


@dataclass(frozen=True, slots=True)
class Admission:
    """What one ``take`` found: ``wait_s`` is 0 when the request was taken, else the seconds
    until both buckets could serve it; ``requests_left`` and ``tokens_left`` are the buckets'
    levels after the call (fractions: they refill continuously)."""

    wait_s: float
    requests_left: float
    tokens_left: float

    @property
    def taken(self) -> bool:
        return self.wait_s <= 0


class Limiter(Protocol):
    limit: RateLimit

    def acquire(self, key: str, *, tokens: int, limit: RateLimit | None = None) -> None:
        """Take one request and ``tokens`` tokens for ``key``, or raise ``RateLimited``."""
        ...

    def take(self, key: str, *, tokens: int, limit: RateLimit | None = None) -> Admission:
        """Take one request and ``tokens`` tokens for ``key`` if both buckets hold them."""
        ...


@dataclass(slots=True)
class _Bucket:
    level: float
    at: float


def _too_big(tokens: int, limit: RateLimit) -> None:
    if tokens > limit.tokens_per_minute:
        raise RateLimited(
            f"this request needs {tokens} tokens, more than the {limit.tokens_per_minute} "
            "allowed per minute",
            retry_after_s=60,
            details={"limit_tokens": limit.tokens_per_minute, "requested_tokens": tokens},
        )


def _refused(wait: float, limit: RateLimit) -> RateLimited:
    rpm, tpm = limit.requests_per_minute, limit.tokens_per_minute
    return RateLimited(
        f"rate limit reached: {rpm} requests and {tpm} tokens per minute per key; "
        f"retry in {math.ceil(wait)} s",
        retry_after_s=max(1.0, math.ceil(wait)),
        details={"limit_requests": rpm, "limit_tokens": tpm},
    )


class InProcessLimiter:
    def __init__(
        self,
        limit: RateLimit,
        *,
        now: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.limit = limit
        self.now = now
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[_Bucket, _Bucket]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, *, tokens: int, limit: RateLimit | None = None) -> None:
        """Take one request and ``tokens`` tokens for ``key``, or raise ``RateLimited``."""
        limit = limit or self.limit
        _too_big(tokens, limit)
        admission = self.take(key, tokens=tokens, limit=limit)
        if not admission.taken:
            raise _refused(admission.wait_s, limit)

    def take(self, key: str, *, tokens: int, limit: RateLimit | None = None) -> Admission:
        """Take one request and ``tokens`` tokens for ``key`` if both buckets hold them."""
        limit = limit or self.limit
        rpm, tpm = limit.requests_per_minute, limit.tokens_per_minute
        with self._lock:
            t = self.now()
            if key not in self._buckets:
                if len(self._buckets) >= self.max_keys:
                    self._buckets.clear()  # a full bucket is what a forgotten key gets anyway
                self._buckets[key] = (_Bucket(rpm, t), _Bucket(tpm, t))
            requests, toks = self._buckets[key]
            for bucket, per_min in ((requests, rpm), (toks, tpm)):
                bucket.level = min(per_min, bucket.level + (t - bucket.at) * per_min / 60)
                bucket.at = t
            wait = max(_wait(requests.level, 1, rpm), _wait(toks.level, tokens, tpm))
            if wait <= 0:
                requests.level -= 1
                toks.level -= tokens
            return Admission(wait, requests.level, toks.level)


def _wait(level: float, need: float, per_min: int) -> float:
    return 0.0 if level >= need else (need - level) * 60 / per_min


# Both buckets of one key in one hash: r (requests left), t (tokens left), at (last refill, s).
# Returns the seconds to wait and both levels after the call, as strings (Lua numbers would be
# truncated to integers); a wait of "0" means the request was taken. Redis's own clock is the
# only clock, so processes never disagree.
_LUA = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local need = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'r', 't', 'at')
local r = tonumber(state[1]) or rpm
local t = tonumber(state[2]) or tpm
local at = tonumber(state[3]) or now
local dt = math.max(0, now - at)
r = math.min(rpm, r + dt * rpm / 60)
t = math.min(tpm, t + dt * tpm / 60)
local wait = 0
if r < 1 then wait = (1 - r) * 60 / rpm end
if t < need then wait = math.max(wait, (need - t) * 60 / tpm) end
if wait == 0 then
  r = r - 1
  t = t - need
end
redis.call('HSET', KEYS[1], 'r', tostring(r), 't', tostring(t), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], 120)
return {tostring(wait), tostring(r), tostring(t)}
"""


class RedisLimiter:
    """Token buckets in Redis, shared by every process that uses the same ``url`` and
    ``prefix``; falls back to ``fallback`` (in-process) while Redis is unreachable."""

    def __init__(
        self,
        url: str,
        limit: RateLimit,
        *,
        prefix: str = "neocloud:rl:",
        timeout_s: float = 0.25,
        retry_down_s: float = 1.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        import redis

        self.limit = limit
        self.prefix = prefix
        self.retry_down_s = retry_down_s
        self.now = now
        self.fallback = InProcessLimiter(limit, now=now)
        self._client: Any = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
        )
        self._script: Any = self._client.register_script(_LUA)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._down_until = 0.0

    @property
    def degraded(self) -> bool:
        """True while Redis is considered away and limits are enforced per process."""
        return self.now() < self._down_until

    def acquire(self, key: str, *, tokens: int, limit: RateLimit | None = None) -> None:
        limit = limit or self.limit
        _too_big(tokens, limit)
        admission = self.take(key, tokens=tokens, limit=limit)
        if not admission.taken:
            raise _refused(admission.wait_s, limit)

    def take(self, key: str, *, tokens: int, limit: RateLimit | None = None) -> Admission:
        """Take one request and ``tokens`` tokens for ``key`` if both buckets in Redis hold
        them (in this process's buckets while Redis is away)."""
        limit = limit or self.limit
        if self.degraded:
            return self.fallback.take(key, tokens=tokens, limit=limit)
        try:
            answer = self._script(
                keys=[self.prefix + key],
                args=[limit.requests_per_minute, limit.tokens_per_minute, tokens],
            )
        except self._errors as exc:
            if self._down_until == 0.0:
                log.error("Redis rate limiter unreachable (%s): limiting per process", exc)
            self._down_until = self.now() + self.retry_down_s
            return self.fallback.take(key, tokens=tokens, limit=limit)
        if self._down_until:
            log.warning("Redis rate limiter reachable again")
            self._down_until = 0.0
        wait, requests_left, tokens_left = (float(part) for part in answer)
        return Admission(wait, requests_left, tokens_left)

    def close(self) -> None:
        self._client.close()
