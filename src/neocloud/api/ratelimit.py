"""Per-key request rate limits on the platform API (``/api/v1``), as GitHub's REST API has them.

Every request under ``/api/v1`` (but the health check) takes one request from its caller's
bucket, and a write (``POST``, ``PUT``, ``PATCH``, ``DELETE``) one from a second, smaller bucket
too. Each bucket holds a minute's allowance and refills continuously, so a client may burst a
minute's worth at once and then goes at the steady rate. The caller is the API key (by a hash
of the bearer token, before authentication, so that a flood of bad keys costs no database
lookups) or, without a key, the client's address.

Every answer carries GitHub's headers for the bucket that decided it: ``X-RateLimit-Limit``,
``X-RateLimit-Remaining``, ``X-RateLimit-Used``, ``X-RateLimit-Reset`` (UTC epoch seconds when
the bucket is full again) and ``X-RateLimit-Resource`` (``core``, or ``write`` when the write
bucket refused). A refusal is a 429 ``rate_limit_exceeded`` in the platform's error shape with
``Retry-After`` in seconds.

The buckets are the studio's (``neocloud.studio.ratelimit``): in memory, or shared by every
process through Redis when ``NEOCLOUD_REDIS_URL`` is set (the studio's fail-open rule applies:
while Redis is away each process limits on its own). Operator keys are limited like any other:
the limit protects the control plane from a runaway script, whichever key it holds, and the
operator raises it for everyone with ``NEOCLOUD_API_REQUESTS_PER_MINUTE``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from neocloud.api.asgi import ASGIApp, Message, Receive, Scope, Send
from neocloud.api.errors import error_response
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import RateLimited
from neocloud.kernel.settings import Settings
from neocloud.studio.ratelimit import (
    Admission,
    InProcessLimiter,
    Limiter,
    RateLimit,
    RedisLimiter,
)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True, slots=True)
class ApiRateLimit:
    """Requests and writes a minute per caller."""

    requests_per_minute: int = 600
    writes_per_minute: int = 240

    def buckets(self) -> RateLimit:
        # The studio's second bucket counts tokens; here each write is one "token".
        return RateLimit(self.requests_per_minute, self.writes_per_minute)


def build_limiter(settings: Settings) -> tuple[Limiter, ApiRateLimit]:
    """The limiter the settings ask for (Redis when ``redis_url`` is set) and its limit."""
    limit = ApiRateLimit(settings.api_requests_per_minute, settings.api_writes_per_minute)
    limiter: Limiter = (
        RedisLimiter(
            settings.redis_url,
            limit.buckets(),
            prefix=settings.api_redis_prefix,
            timeout_s=settings.redis_timeout_s,
        )
        if settings.redis_url
        else InProcessLimiter(limit.buckets())
    )
    return limiter, limit


def caller_key(scope: Scope) -> str:
    """Whose bucket a request takes from: a hash of its bearer token, else its address."""
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            token = token.strip()
            if scheme.lower() == b"bearer" and token:
                digest = hashlib.sha256(b"neocloud-api-rate-limit\x00" + token).hexdigest()
                return "key:" + digest[:32]
    client = scope.get("client")
    return "addr:" + (str(client[0]) if client else "unknown")


class ApiRateLimitMiddleware:
    """Admit or refuse each ``/api/v1`` request by its caller's buckets (see the module)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: Limiter,
        limit: ApiRateLimit,
        clock: Clock,
        prefix: str = "/api/v1",
        exempt: frozenset[str] = frozenset({"/api/v1/health"}),
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.limit = limit
        self.clock = clock
        self.prefix = prefix
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not (path == self.prefix or path.startswith(self.prefix + "/"))
            or path in self.exempt
        ):
            await self.app(scope, receive, send)
            return
        write = scope.get("method", "GET") in WRITE_METHODS
        admission = self.limiter.take(
            caller_key(scope), tokens=1 if write else 0, limit=self.limit.buckets()
        )
        headers = self._headers(admission)
        if not admission.taken:
            await self._refuse(admission, headers, scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).extend(headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _headers(self, admission: Admission) -> list[tuple[bytes, bytes]]:
        """GitHub's ``X-RateLimit-*`` for the bucket that decides: the write bucket when it is
        the one short, else the request bucket."""
        rpm, wpm = self.limit.requests_per_minute, self.limit.writes_per_minute
        write_short = (
            admission.tokens_left < 1 and not admission.taken and admission.requests_left >= 1
        )
        resource, per_min, level = (
            ("write", wpm, admission.tokens_left)
            if write_short
            else ("core", rpm, admission.requests_left)
        )
        remaining = max(0, math.floor(level))
        full_in_s = max(0.0, (per_min - level) * 60 / per_min)
        reset = math.ceil(self.clock.now().timestamp() + full_in_s)
        return [
            (b"x-ratelimit-limit", str(per_min).encode()),
            (b"x-ratelimit-remaining", str(remaining).encode()),
            (b"x-ratelimit-used", str(per_min - remaining).encode()),
            (b"x-ratelimit-reset", str(reset).encode()),
            (b"x-ratelimit-resource", resource.encode()),
        ]

    async def _refuse(
        self,
        admission: Admission,
        headers: list[tuple[bytes, bytes]],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        wait = max(1, math.ceil(admission.wait_s))
        resource = dict(headers)[b"x-ratelimit-resource"].decode()
        per_min = (
            self.limit.writes_per_minute if resource == "write" else self.limit.requests_per_minute
        )
        what = "writes" if resource == "write" else "requests"
        refusal = RateLimited(
            f"rate limit reached: {per_min} {what} per minute per API key; retry in {wait} s",
            retry_after_s=wait,
            details={"limit": per_min, "resource": resource, "retry_after_s": wait},
        )
        response = error_response(refusal)
        response.raw_headers.extend(headers)
        await response(scope, receive, send)
