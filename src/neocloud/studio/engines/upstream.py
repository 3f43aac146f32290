"""Upstream engines: any OpenAI-compatible server (vLLM, SGLang, …) registered by URL.

A pool holds the replicas of one upstream. Each request goes to the healthy replica with the
fewest requests in flight (least outstanding requests; ties go round-robin). Health comes from
two sides:

* a periodic probe per replica (``GET <base>/models``, which vLLM and SGLang both serve) every
  ``probe_interval_s``; a replica that fails it is skipped until a probe succeeds again;
* the requests themselves: a replica that refuses a connection is marked down at once (for
  ``cooldown_s``, or until a probe finds it back) and the request is retried once on another
  replica; nothing was sent, so the retry cannot duplicate work.

When every replica looks down the pool still tries the least loaded one rather than refusing
outright (the probes may be stale). Requests are passed through with the model name rewritten;
streams always ask the upstream for usage (so aborted and finished streams are metered as it
counted) and the gateway hides the usage chunk again when the client did not ask for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
import weakref
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2

from neocloud.kernel.errors import Unavailable

log = logging.getLogger("neocloud.studio.upstream")

Chunks = AsyncGenerator[dict[str, Any], None]


@dataclass
class Replica:
    url: str  # the base URL, ending in /v1
    outstanding: int = 0
    down_until: float = 0.0  # refused a connection: skipped until then (or a good probe)
    healthy: bool = True  # the last probe's verdict
    failures: int = 0  # probes failed in a row


@dataclass
class UpstreamPool:
    name: str
    urls: list[str]
    client: httpx2.AsyncClient = field(default_factory=lambda: httpx2.AsyncClient(timeout=600))
    api_key: str | None = None
    cooldown_s: float = 10.0
    probe_interval_s: float = 5.0
    probe_timeout_s: float = 2.0
    now: Callable[[], float] = time.monotonic
    replicas: list[Replica] = field(init=False)
    _turn: itertools.count[int] = field(init=False, default_factory=itertools.count)
    _prober: asyncio.Task[None] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.replicas = [Replica(url.rstrip("/")) for url in self.urls]

    # -- choosing ---------------------------------------------------------------------------

    def available(self) -> list[Replica]:
        t = self.now()
        return [r for r in self.replicas if r.healthy and r.down_until <= t]

    def pick(self, *, excluding: Replica | None = None) -> Replica:
        """The available replica with the fewest requests in flight (round-robin on ties)."""
        candidates = [r for r in self.available() if r is not excluding]
        if not candidates:
            candidates = [r for r in self.replicas if r is not excluding] or self.replicas
        fewest = min(r.outstanding for r in candidates)
        tied = [r for r in candidates if r.outstanding == fewest]
        return tied[next(self._turn) % len(tied)]

    def mark_down(self, replica: Replica, reason: object) -> None:
        if replica.down_until <= self.now():
            log.warning("upstream %s replica %s is down: %s", self.name, replica.url, reason)
        replica.down_until = self.now() + self.cooldown_s

    # -- health probes ----------------------------------------------------------------------

    async def probe(self, replica: Replica) -> bool:
        """One health check of ``replica``; updates and returns its health."""
        try:
            answer = await self.client.get(
                replica.url + "/models", headers=self._headers(), timeout=self.probe_timeout_s
            )
            ok = answer.status_code < 500
        except httpx2.HTTPError:
            ok = False
        if ok:
            if not replica.healthy or replica.down_until > self.now():
                log.info("upstream %s replica %s is healthy again", self.name, replica.url)
            replica.healthy, replica.failures, replica.down_until = True, 0, 0.0
        else:
            replica.failures += 1
            if replica.healthy:
                log.warning(
                    "upstream %s replica %s failed its health check", self.name, replica.url
                )
            replica.healthy = False
        return ok

    async def probe_all(self) -> None:
        await asyncio.gather(*(self.probe(r) for r in self.replicas))

    def start_probing(self) -> None:
        """Probe every replica each ``probe_interval_s`` in the running event loop; the task
        ends by itself once the pool is dropped (a registry reload replaces pools)."""
        if self._prober is not None and not self._prober.done():
            return
        self._prober = asyncio.get_running_loop().create_task(
            _probe_loop(weakref.ref(self), self.probe_interval_s), name=f"probe-{self.name}"
        )

    async def stop_probing(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
            self._prober = None

    async def aclose(self) -> None:
        """Stop the probes and close the connections (at shutdown)."""
        await self.stop_probing()
        await self.client.aclose()

    # -- requests ---------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    async def post(self, path: str, payload: dict[str, Any]) -> httpx2.Response:
        self.start_probing()
        replica = self.pick()
        for attempt in (1, 2):
            replica.outstanding += 1
            try:
                return await self.client.post(
                    replica.url + path, json=payload, headers=self._headers()
                )
            except httpx2.ConnectError as exc:
                self.mark_down(replica, exc)
                if attempt == 2 or len(self.replicas) == 1:
                    raise Unavailable(f"upstream {self.name} is unreachable: {exc}") from None
            except httpx2.TransportError as exc:
                self.mark_down(replica, exc)
                raise Unavailable(f"upstream {self.name} failed: {exc}") from None
            finally:
                replica.outstanding -= 1
            replica = self.pick(excluding=replica)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _open_stream(
        self, path: str, payload: dict[str, Any]
    ) -> tuple[Replica, httpx2.Response]:
        """Send a streaming request: a replica that refuses the connection is marked down and
        another is tried once. The chosen replica's ``outstanding`` stays counted."""
        replica = self.pick()
        for attempt in (1, 2):
            request = self.client.build_request(
                "POST", replica.url + path, json=payload, headers=self._headers()
            )
            replica.outstanding += 1
            try:
                return replica, await self.client.send(request, stream=True)
            except httpx2.ConnectError as exc:
                replica.outstanding -= 1
                self.mark_down(replica, exc)
                if attempt == 2 or len(self.replicas) == 1:
                    raise Unavailable(f"upstream {self.name} is unreachable: {exc}") from None
            except httpx2.TransportError as exc:
                replica.outstanding -= 1
                self.mark_down(replica, exc)
                raise Unavailable(f"upstream {self.name} failed: {exc}") from None
            replica = self.pick(excluding=replica)
        raise AssertionError("unreachable")  # pragma: no cover

    async def stream(
        self, path: str, payload: dict[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Yield the upstream's SSE chunks as JSON objects (``[DONE]`` ends the iteration)."""
        self.start_probing()
        replica, response = await self._open_stream(path, payload)
        try:
            if response.status_code >= 400:
                await response.aread()
                raise Unavailable(
                    f"upstream {self.name} answered {response.status_code}",
                    details={"upstream": _json_or_text(response)},
                )
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                yield json.loads(data)
        except httpx2.TransportError as exc:
            self.mark_down(replica, exc)
            raise Unavailable(f"upstream {self.name} failed mid-stream: {exc}") from None
        finally:
            replica.outstanding -= 1
            await response.aclose()


async def _probe_loop(pool_ref: weakref.ref[UpstreamPool], interval_s: float) -> None:
    while True:
        pool = pool_ref()
        if pool is None:
            return
        try:
            await pool.probe_all()
        except Exception:  # a probe must never kill the loop
            log.exception("upstream health probes failed")
        del pool
        await asyncio.sleep(interval_s)


def _json_or_text(response: httpx2.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:1000]
