"""API-key authentication for the ``/v1`` hot path, with a per-process cache of principals.

The platform's ``Caller`` dependency looks the key up in the database on every request (in a
worker thread). The OpenAI-compatible API is called far more often than the rest, so here a key
that authenticated is remembered (keyed by the token's SHA-256, never the token itself) and its
later requests read no database. A cached principal is served only while all of these hold:

* no credential change (a key revoked, a member removed from an org or given another role) has
  committed in this process since it was cached: tenancy counts those (``local_version``), so a
  revoke answered by this process has emptied its cache before the caller hears back;
* the deployment's credentials version has not moved since: a poller thread reads it every
  ``poll_s`` seconds (``NEOCLOUD_STUDIO_AUTH_POLL_S``, 0.25 by default), so a change made through
  another server process takes effect here within ``poll_s`` plus one read;
* the key's ``expires_at`` has not passed (by the app's clock, as the database check decides);
* at most ``ttl_s`` seconds (5) have passed: the bound should the poller be unable to read.

An entry is stamped with both versions as they were *before* its database check, so a check
that raced a change is never cached as current. Failures are never cached, and the first
request of a key goes through the platform's own check unchanged.

Every ``POST`` on ``/v1`` runs a model and is billed to the caller's org, so it needs role
``member`` (``may_spend``): a ``viewer`` key lists models and reads usage but spends nothing, as
OpenAI's read-only keys and Stripe's restricted keys without write access cannot create
completions or charges.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials

from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import Clock, SystemClock
from neocloud.kernel.errors import PermissionDenied
from neocloud.studio.poller import Poller
from neocloud.tenancy.credentials import local_version
from neocloud.web.deps import bearer_scheme, current_principal, get_ctx

log = logging.getLogger("neocloud.studio.auth")

SPEND_ROLE = Role.MEMBER  # the least role whose keys may run (and pay for) a model

# (this process's credential changes, the cache's count of version moves) when a check began
Stamp = tuple[int, int]


class PrincipalCache:
    def __init__(
        self,
        *,
        ttl_s: float = 5.0,
        max_keys: int = 10_000,
        now: Callable[[], float] = time.monotonic,
        clock: Clock | None = None,
        version: Callable[[], int] | None = None,
        poll_s: float = 0.25,
    ) -> None:
        """``now``: seconds, for ``ttl_s``; ``clock``: the app's, for keys' ``expires_at``;
        ``version``: reads the deployment's credentials version (no poller without it)."""
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self.now = now
        self.clock: Clock = clock or SystemClock()
        self.poll_s = poll_s
        self._version = version
        self._hits: dict[bytes, tuple[Principal, float, int, int]] = {}
        self._seen: int | None = None  # the credentials version the last poll read
        self._epoch = 0  # moves each time the poll finds the version moved (or on forget_all)
        self._lock = threading.Lock()
        self._poller = Poller("studio-auth-poll", self.poll, poll_s, log)

    def stamp(self) -> Stamp:
        """What an entry will be cached under: take it before checking the key."""
        return local_version(), self._epoch

    def get(self, token: str) -> Principal | None:
        hit = self._hits.get(hashlib.sha256(token.encode()).digest())
        if hit is None:
            return None
        principal, until, local, epoch = hit
        if until <= self.now() or local != local_version() or epoch != self._epoch:
            return None
        expires_at = principal.expires_at
        if expires_at is not None and expires_at <= self.clock.now():
            return None
        return principal

    def put(self, token: str, principal: Principal, stamp: Stamp) -> None:
        """Remember ``principal``, valid while the versions are still those of ``stamp``."""
        hits = self._hits
        if len(hits) >= self.max_keys:
            hits.clear()
        local, epoch = stamp
        hits[hashlib.sha256(token.encode()).digest()] = (
            principal,
            self.now() + self.ttl_s,
            local,
            epoch,
        )

    def forget_all(self) -> None:
        with self._lock:
            self._epoch += 1
            self._hits = {}

    # -- the poller: another process's credential changes --------------------------------------

    def poll(self) -> None:
        """Read the credentials version; forget every principal when it moved."""
        if self._version is None:
            return
        version = self._version()
        if version != self._seen:
            self._seen = version
            self.forget_all()

    def start(self) -> None:
        """Read the version now, then every ``poll_s`` in a daemon thread (without a way to
        read it, nothing: ``ttl_s`` alone bounds a cached principal)."""
        if self._version is not None:
            self._poller.start()

    def stop(self) -> None:
        self._poller.stop()


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def may_spend(principal: Principal) -> bool:
    """Whether the key may run a model on the org's account (role member or higher)."""
    return principal.role.at_least(SPEND_ROLE)


def require_spend(principal: Principal) -> None:
    if not may_spend(principal):
        raise PermissionDenied(
            f"running a model spends the organization's money: it needs role "
            f"{SPEND_ROLE.value} or higher; the key's role is {principal.role.value}",
            code="insufficient_role",
        )


async def studio_caller(
    request: Request,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """The caller of a ``/v1`` request: from the cache, else the platform's check (a thread).

    A ``POST`` (a model run, billed) by a key that may not spend is 403 ``insufficient_role``."""
    cache: PrincipalCache = request.app.state.studio.principals
    token = bearer_token(request.headers.get("authorization"))
    if token is not None and (principal := cache.get(token)) is not None:
        request.state.principal = principal
    else:
        stamp = cache.stamp()  # before the check: a change that commits during it voids it
        principal = await run_in_threadpool(current_principal, request, get_ctx(request), _declared)
        if token is not None:
            cache.put(token, principal, stamp)
    if request.method == "POST":
        require_spend(principal)
    return principal


StudioCaller = Annotated[Principal, Depends(studio_caller)]
