"""Per-key rate limits: requests and tokens per minute, as token buckets.

Each key has two buckets that hold up to a minute's allowance and refill continuously. A request
takes one request and its token estimate (prompt tokens plus the completion limit, as OpenAI
counts) from both or from neither; a refusal is a 429 ``rate_limit_exceeded`` with the seconds
until both buckets could serve it in ``Retry-After``. This limiter is in-process: with several
API processes each enforces the limit on its own (a shared Redis limiter is still to come).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from neocloud.kernel.errors import RateLimited


@dataclass(frozen=True, slots=True)
class RateLimit:
    requests_per_minute: int = 600
    tokens_per_minute: int = 1_000_000


@dataclass(slots=True)
class _Bucket:
    level: float
    at: float


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

    def acquire(self, key: str, *, tokens: int) -> None:
        """Take one request and ``tokens`` tokens for ``key``, or raise ``RateLimited``."""
        rpm, tpm = self.limit.requests_per_minute, self.limit.tokens_per_minute
        if tokens > tpm:
            raise RateLimited(
                f"this request needs {tokens} tokens, more than the {tpm} allowed per minute",
                retry_after_s=60,
                details={"limit_tokens": tpm, "requested_tokens": tokens},
            )
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
            if wait > 0:
                raise RateLimited(
                    f"rate limit reached: {rpm} requests and {tpm} tokens per minute per key; "
                    f"retry in {math.ceil(wait)} s",
                    retry_after_s=max(1.0, math.ceil(wait)),
                    details={"limit_requests": rpm, "limit_tokens": tpm},
                )
            requests.level -= 1
            toks.level -= tokens


def _wait(level: float, need: float, per_min: int) -> float:
    return 0.0 if level >= need else (need - level) * 60 / per_min
