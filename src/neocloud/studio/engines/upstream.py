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
outright (the probes may be stale). An upstream that takes longer than the timeouts
(``UpstreamOptions``: connect, between reads, whole exchange) answers 504 ``upstream_timeout``;
one whose TLS certificate cannot be verified answers 502 ``upstream_certificate_invalid`` naming
the failure (``https://`` upstreams are always verified, against a CA bundle setting for a
private CA). Requests are passed through with the model name rewritten;
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
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx2

from neocloud.kernel.errors import NeocloudError, Unavailable
from neocloud.kernel.settings import Settings
from neocloud.studio.engines.fasthttp import (
    CertificateFailed,
    ConnectFailed,
    FastClient,
    UpstreamIOError,
    UpstreamTimeout,
)

log = logging.getLogger("neocloud.studio.upstream")

Chunks = AsyncGenerator[dict[str, Any], None]


@dataclass(frozen=True, slots=True)
class UpstreamOptions:
    """How the gateway talks to upstreams: timeouts in seconds and the CA bundle for
    ``https://`` (``None``: the system's trusted CAs)."""

    connect_timeout_s: float = 5.0
    read_timeout_s: float = 600.0
    total_timeout_s: float = 1800.0
    probe_timeout_s: float = 2.0
    ca_bundle: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> UpstreamOptions:
        return cls(
            connect_timeout_s=settings.studio_upstream_connect_timeout_s,
            read_timeout_s=settings.studio_upstream_read_timeout_s,
            total_timeout_s=settings.studio_upstream_total_timeout_s,
            probe_timeout_s=settings.studio_upstream_probe_timeout_s,
            ca_bundle=settings.studio_upstream_ca_bundle,
        )

    def fast_client(self) -> FastClient:
        return FastClient(
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
            total_timeout_s=self.total_timeout_s,
            ca_bundle=self.ca_bundle,
        )


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
    # None: the gateway's own keep-alive client (fasthttp); tests may hand in an httpx client.
    client: httpx2.AsyncClient | None = None
    api_key: str | None = None
    cooldown_s: float = 10.0
    probe_interval_s: float = 5.0
    probe_timeout_s: float | None = None  # None: ``options.probe_timeout_s``
    now: Callable[[], float] = time.monotonic
    options: UpstreamOptions = field(default_factory=UpstreamOptions)
    replicas: list[Replica] = field(init=False)
    _turn: itertools.count[int] = field(init=False, default_factory=itertools.count)
    _prober: asyncio.Task[None] | None = field(init=False, default=None)
    _fast: FastClient = field(init=False)

    def __post_init__(self) -> None:
        self.replicas = [Replica(url.rstrip("/")) for url in self.urls]
        if self.probe_timeout_s is None:
            self.probe_timeout_s = self.options.probe_timeout_s
        self._fast = self.options.fast_client()

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
        url = replica.url + "/models"
        try:
            if self.client is None:
                answer: UpstreamResponse = await self._fast.request(
                    "GET", url, headers=self._headers(), timeout_s=self.probe_timeout_s
                )
            else:
                answer = await self.client.get(
                    url, headers=self._headers(), timeout=self.probe_timeout_s
                )
            ok = answer.status_code < 500
        except (httpx2.HTTPError, UpstreamIOError):
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
        if self.client is None:
            await self._fast.aclose()
        else:
            await self.client.aclose()

    # -- requests ---------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    async def _post_once(
        self, replica: Replica, path: str, payload: dict[str, Any]
    ) -> UpstreamResponse:
        url = replica.url + path
        if self.client is None:
            try:
                return await self._fast.request(
                    "POST", url, json_body=payload, headers=self._headers()
                )
            except UpstreamIOError as exc:
                raise _failure(exc) from None
        try:
            return await self.client.post(url, json=payload, headers=self._headers())
        except httpx2.TransportError as exc:
            raise _failure(exc) from None

    async def _stream_once(self, replica: Replica, path: str, payload: dict[str, Any]) -> _Stream:
        url = replica.url + path
        if self.client is None:
            try:
                status, error, lines = await self._fast.stream_lines(
                    url, json_body=payload, headers=self._headers()
                )
            except UpstreamIOError as exc:
                raise _failure(exc) from None
            return _Stream(status, error, lines, lines.aclose)  # type: ignore[attr-defined]
        request = self.client.build_request("POST", url, json=payload, headers=self._headers())
        try:
            response = await self.client.send(request, stream=True)
            if response.status_code >= 400:
                await response.aread()
                await response.aclose()
                return _Stream(response.status_code, response, _no_lines(), _nothing_to_close)
        except httpx2.TransportError as exc:
            raise _failure(exc) from None
        return _Stream(response.status_code, None, _one_by_one(response), response.aclose)

    async def post(self, path: str, payload: dict[str, Any]) -> UpstreamResponse:
        """POST to the least loaded available replica; a refused connection marks it down and
        the request goes once to another."""
        return (await self._post(path, payload))[1]

    async def post_json(self, path: str, payload: dict[str, Any]) -> tuple[int, Any]:
        """``post``, answering the status and the decoded JSON body; a body that is not JSON,
        or a success that is not a JSON object, raises ``BadUpstreamResponse`` (502) naming the
        replica's host and what it answered."""
        replica, response = await self._post(path, payload)
        try:
            data = response.json()
        except ValueError:
            raise self._bad_answer(replica, response, "a body that is not JSON") from None
        if response.status_code < 400 and not isinstance(data, dict):
            raise self._bad_answer(replica, response, "JSON that is not an object")
        return response.status_code, data

    def _bad_answer(
        self, replica: Replica, response: UpstreamResponse, what: str
    ) -> BadUpstreamResponse:
        host = upstream_host(replica.url)
        excerpt = " ".join(response.text[:200].split())
        if self.api_key:
            excerpt = excerpt.replace(self.api_key, "***")  # an upstream echoing our key back
        log.warning("upstream %s replica %s answered %s", self.name, host, what)
        return BadUpstreamResponse(
            f"the upstream {host} answered {response.status_code} with {what}: {excerpt!r}",
            details={"upstream": host, "upstream_status": response.status_code},
        )

    def _untrusted(self, replica: Replica, exc: Exception) -> UpstreamCertificateInvalid:
        host = upstream_host(replica.url)
        return UpstreamCertificateInvalid(
            f"upstream {self.name} ({host}) failed TLS verification: {exc}",
            details={"upstream": host},
        )

    def _timed_out(self, replica: Replica, exc: Exception) -> UpstreamTimedOut:
        host = upstream_host(replica.url)
        log.warning("upstream %s replica %s timed out: %s", self.name, host, exc)
        return UpstreamTimedOut(
            f"upstream {self.name} ({host}) timed out: {exc}", details={"upstream": host}
        )

    async def _post(self, path: str, payload: dict[str, Any]) -> tuple[Replica, UpstreamResponse]:
        self.start_probing()
        replica = self.pick()
        for attempt in (1, 2):
            replica.outstanding += 1
            try:
                return replica, await self._post_once(replica, path, payload)
            except _Untrusted as exc:
                self.mark_down(replica, exc)
                raise self._untrusted(replica, exc) from None
            except _TimedOut as exc:
                raise self._timed_out(replica, exc) from None
            except _Refused as exc:
                self.mark_down(replica, exc)
                if attempt == 2 or len(self.replicas) == 1:
                    raise Unavailable(f"upstream {self.name} is unreachable: {exc}") from None
            except _Broken as exc:
                self.mark_down(replica, exc)
                raise Unavailable(f"upstream {self.name} failed: {exc}") from None
            finally:
                replica.outstanding -= 1
            replica = self.pick(excluding=replica)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _open_stream(self, path: str, payload: dict[str, Any]) -> tuple[Replica, _Stream]:
        """Send a streaming request like ``post``; the chosen replica's ``outstanding`` stays
        counted until the stream is closed."""
        replica = self.pick()
        for attempt in (1, 2):
            replica.outstanding += 1
            try:
                return replica, await self._stream_once(replica, path, payload)
            except _Untrusted as exc:
                replica.outstanding -= 1
                self.mark_down(replica, exc)
                raise self._untrusted(replica, exc) from None
            except _TimedOut as exc:
                replica.outstanding -= 1
                raise self._timed_out(replica, exc) from None
            except _Refused as exc:
                replica.outstanding -= 1
                self.mark_down(replica, exc)
                if attempt == 2 or len(self.replicas) == 1:
                    raise Unavailable(f"upstream {self.name} is unreachable: {exc}") from None
            except _Broken as exc:
                replica.outstanding -= 1
                self.mark_down(replica, exc)
                raise Unavailable(f"upstream {self.name} failed: {exc}") from None
            replica = self.pick(excluding=replica)
        raise AssertionError("unreachable")  # pragma: no cover

    async def stream_batches(
        self, path: str, payload: dict[str, Any]
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Yield the upstream's SSE chunks as JSON objects, those that arrived together in one
        list (``[DONE]`` ends the iteration)."""
        raw = self.stream_data(path, payload)
        try:
            async for batch in raw:
                yield [json.loads(data) for data in batch]
        finally:
            await raw.aclose()

    async def stream_data(
        self, path: str, payload: dict[str, Any]
    ) -> AsyncGenerator[list[str], None]:
        """Like ``stream_batches`` but each chunk as the text of its ``data:`` line (JSON not
        parsed, so a caller can pass it on as it came)."""
        self.start_probing()
        replica, opened = await self._open_stream(path, payload)
        try:
            if opened.error is not None:
                raise Unavailable(
                    f"upstream {self.name} answered {opened.status}",
                    details={"upstream": _json_or_text(opened.error)},
                )
            async for lines in opened.lines:
                batch: list[str] = []
                for line in lines:
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        async for _ in opened.lines:  # the end of the body: keeps the
                            pass  # connection reusable
                        if batch:
                            yield batch
                        return
                    batch.append(data)
                if batch:
                    yield batch
        except (httpx2.TransportError, UpstreamIOError) as exc:
            self.mark_down(replica, exc)
            raise Unavailable(f"upstream {self.name} failed mid-stream: {exc}") from None
        finally:
            replica.outstanding -= 1
            await opened.close()

    async def stream(
        self, path: str, payload: dict[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The chunks of ``stream_batches`` one by one."""
        batches = self.stream_batches(path, payload)
        try:
            async for batch in batches:
                for chunk in batch:
                    yield chunk
        finally:
            await batches.aclose()


class UpstreamResponse(Protocol):
    @property
    def status_code(self) -> int: ...

    def json(self) -> Any: ...

    @property
    def text(self) -> str: ...


class BadUpstreamResponse(NeocloudError):
    """An upstream answered something that is not an OpenAI-style answer (HTML from a proxy,
    plain text): the gateway's 502, not its own failure."""

    status = 502
    type = "upstream_error"
    default_code = "bad_upstream_response"


def upstream_host(url: str) -> str:
    """``host:port`` of a replica's base URL, without any credentials it may carry."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"  # IPv6
    return f"{host}:{parts.port}" if parts.port is not None else host


class UpstreamTimedOut(NeocloudError):
    """An upstream did not answer within the gateway's timeouts: 504, as a proxy answers."""

    status = 504
    type = "upstream_error"
    default_code = "upstream_timeout"


class UpstreamCertificateInvalid(NeocloudError):
    """An ``https://`` upstream's certificate could not be verified (untrusted CA, wrong host
    name, expired): nothing was sent to it. Set ``NEOCLOUD_STUDIO_UPSTREAM_CA_BUNDLE`` for a
    private CA."""

    status = 502
    type = "upstream_error"
    default_code = "upstream_certificate_invalid"


class _Refused(Exception):
    """No connection: nothing was sent."""


class _Untrusted(_Refused):
    """The TLS handshake failed: nothing was sent, and another try would fail the same way."""


class _TimedOut(Exception):
    """The upstream stopped answering past a timeout (the request may have been received)."""


class _Broken(Exception):
    """The exchange broke after it started."""


def _failure(exc: Exception) -> Exception:
    """The pool's kind of failure for a client's exception (fasthttp's or httpx's)."""
    text = str(exc)
    if isinstance(exc, CertificateFailed):
        return _Untrusted(text)
    if isinstance(exc, ConnectFailed | httpx2.ConnectError | httpx2.ConnectTimeout):
        if isinstance(exc, httpx2.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in text:
            return _Untrusted(text)
        return _Refused(text)
    if isinstance(exc, UpstreamTimeout | httpx2.TimeoutException):
        return _TimedOut(text)
    return _Broken(text)


@dataclass
class _Stream:
    status: int
    error: UpstreamResponse | None  # the whole answer when the status is 4xx/5xx
    lines: AsyncIterator[list[str]]  # the lines of each network read, together
    close: Callable[[], Awaitable[None]]


async def _no_lines() -> AsyncIterator[list[str]]:
    return
    yield


async def _one_by_one(response: httpx2.Response) -> AsyncIterator[list[str]]:
    async for line in response.aiter_lines():
        yield [line]


async def _nothing_to_close() -> None:
    return None


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


def _json_or_text(response: UpstreamResponse) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:1000]
