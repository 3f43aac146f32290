"""API-key authentication for the ``/v1`` hot path, with a short per-process cache.

The platform's ``Caller`` dependency looks the key up in the database on every request (in a
worker thread). The OpenAI-compatible API is called far more often than the rest, so here a key
that authenticated is remembered for ``ttl_s`` seconds (keyed by the token's SHA-256, never the
token itself): a revoked or expired key is refused within ``ttl_s`` at most. Failures are never
cached, and the first request of a key goes through the platform's own check unchanged.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials

from neocloud.kernel.auth import Principal
from neocloud.web.deps import _bearer, current_principal, get_ctx


class PrincipalCache:
    def __init__(
        self,
        *,
        ttl_s: float = 5.0,
        max_keys: int = 10_000,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self.now = now
        self._hits: dict[bytes, tuple[Principal, float]] = {}

    def get(self, token: str) -> Principal | None:
        hit = self._hits.get(hashlib.sha256(token.encode()).digest())
        if hit is None or hit[1] <= self.now():
            return None
        return hit[0]

    def put(self, token: str, principal: Principal) -> None:
        if len(self._hits) >= self.max_keys:
            self._hits.clear()
        self._hits[hashlib.sha256(token.encode()).digest()] = (principal, self.now() + self.ttl_s)

    def forget_all(self) -> None:
        self._hits.clear()


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def studio_caller(
    request: Request,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller of a ``/v1`` request: from the cache, else the platform's check (a thread)."""
    cache: PrincipalCache = request.app.state.studio.principals
    token = bearer_token(request.headers.get("authorization"))
    if token is not None and (principal := cache.get(token)) is not None:
        request.state.principal = principal
        return principal
    principal = await run_in_threadpool(current_principal, request, get_ctx(request), _declared)
    if token is not None:
        cache.put(token, principal)
    return principal


StudioCaller = Annotated[Principal, Depends(studio_caller)]
