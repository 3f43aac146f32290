"""A small HTTP/1.1 client for the gateway's upstream calls: keep-alive connections on asyncio
streams, JSON bodies, SSE streamed back line by line.

Why not httpx: on the gateway's hot path, httpx's layers (anyio timeouts per read, h11 events,
URL parsing, per-request socket introspection) cost about as much CPU as the rest of the request.
This client does only what an OpenAI-compatible upstream needs: ``POST`` with a JSON body and
``GET`` for health probes, answers with ``Content-Length``, chunked or close-delimited bodies,
over plain TCP (``http://``) or TLS (``https://``: the certificate and host name are verified
against the system's CAs, or the ``ca_bundle`` given for a private CA).

Timeouts: ``connect_timeout_s`` to open a connection (TLS handshake included),
``read_timeout_s`` between two reads of an answer, ``total_timeout_s`` for a whole exchange
(headers and body, streamed or not).

Errors: ``ConnectFailed`` when no connection could be made (nothing was sent, so the caller may
try another replica), ``CertificateFailed`` (a ``ConnectFailed``) when the upstream's certificate
could not be verified, ``UpstreamTimeout`` when the upstream stopped answering past a timeout,
``UpstreamIOError`` (the base of all three) when the connection broke during the exchange.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class UpstreamIOError(Exception):
    """The connection to the upstream broke or timed out mid-exchange."""


class ConnectFailed(UpstreamIOError):
    """No connection could be opened (refused, unreachable or timed out)."""


class CertificateFailed(ConnectFailed):
    """The TLS handshake failed: the upstream's certificate is not trusted or not its name's."""


class UpstreamTimeout(UpstreamIOError):
    """The upstream stopped answering for longer than a read timeout, or the whole exchange
    took longer than the total timeout."""


# The URL schemes this client serves (a registration with any other is refused).
SUPPORTED_SCHEMES = ("http", "https")


@dataclass
class Response:
    status_code: int
    headers: dict[str, str]
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")


class _Conn:
    __slots__ = ("reader", "reused", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.reused = reader, writer, False

    def close(self) -> None:
        self.writer.close()


@dataclass(frozen=True, slots=True)
class _Target:
    host: str
    port: int
    path: str
    host_header: str
    tls: bool


def _target(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in SUPPORTED_SCHEMES:
        raise ValueError(f"only http:// and https:// upstreams are supported: {url}")
    tls = parts.scheme == "https"
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if tls else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return _Target(host, port, path, parts.netloc.rpartition("@")[2], tls)


def tls_context(ca_bundle: Path | str | None = None) -> ssl.SSLContext:
    """A client context that verifies certificates and host names: against ``ca_bundle`` (a
    PEM file of CAs) when given, else the system's trusted CAs."""
    return ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)


class FastClient:
    def __init__(
        self,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 600.0,
        total_timeout_s: float = 1800.0,
        max_idle_per_host: int = 256,
        ca_bundle: Path | str | None = None,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.total_timeout_s = total_timeout_s
        self.max_idle_per_host = max_idle_per_host
        self.ca_bundle = ca_bundle
        self._tls: ssl.SSLContext | None = None  # built at the first https:// connection
        self._idle: dict[tuple[str, int, bool], list[_Conn]] = {}
        self._targets: dict[str, _Target] = {}

    # -- connections ------------------------------------------------------------------------

    async def _open(self, t: _Target) -> _Conn:
        context = None
        if t.tls:
            if self._tls is None:
                self._tls = tls_context(self.ca_bundle)
            context = self._tls
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    t.host,
                    t.port,
                    limit=1 << 20,
                    ssl=context,
                    server_hostname=t.host if context else None,
                ),
                self.connect_timeout_s,
            )
        except ssl.SSLCertVerificationError as exc:
            raise CertificateFailed(
                f"the TLS certificate of {t.host}:{t.port} could not be verified: "
                f"{exc.verify_message or exc.reason}"
            ) from None
        except ssl.SSLError as exc:
            raise CertificateFailed(
                f"the TLS handshake with {t.host}:{t.port} failed: {exc.reason or exc}"
            ) from None
        except TimeoutError:
            raise ConnectFailed(
                f"cannot connect to {t.host}:{t.port}: no connection in {self.connect_timeout_s} s"
            ) from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {t.host}:{t.port}: {exc}") from None
        return _Conn(reader, writer)

    def _acquire_idle(self, t: _Target) -> _Conn | None:
        idle = self._idle.get((t.host, t.port, t.tls))
        while idle:
            conn = idle.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                conn.reused = True
                return conn
            conn.close()
        return None

    def _release(self, t: _Target, conn: _Conn) -> None:
        idle = self._idle.setdefault((t.host, t.port, t.tls), [])
        if len(idle) < self.max_idle_per_host:
            idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        """Close the idle connections, waiting up to a second for them (a TLS connection
        says goodbye first); any still open then is aborted."""
        conns = [conn for idle in self._idle.values() for conn in idle]
        self._idle.clear()
        for conn in conns:
            conn.close()
        if not conns:
            return
        closing = asyncio.gather(
            *(conn.writer.wait_closed() for conn in conns), return_exceptions=True
        )
        try:
            await asyncio.wait_for(closing, 1.0)
        except TimeoutError:
            for conn in conns:
                conn.writer.transport.abort()

    # -- one exchange -----------------------------------------------------------------------

    def _target_of(self, url: str) -> _Target:
        t = self._targets.get(url)
        if t is None:
            if len(self._targets) > 10_000:
                self._targets.clear()
            t = self._targets[url] = _target(url)
        return t

    async def _start(
        self,
        method: str,
        url: str,
        body: bytes,
        headers: dict[str, str] | None,
        timeout_s: float | None,
        deadline: float,
    ) -> tuple[_Target, _Conn, int, dict[str, str]]:
        """Send the request and read the status and headers (retrying once on a fresh
        connection when a reused keep-alive connection turns out to be closed)."""
        t = self._target_of(url)
        head = (
            f"{method} {t.path} HTTP/1.1\r\nHost: {t.host_header}\r\n"
            f"Content-Length: {len(body)}\r\n"
        )
        if body:
            head += "Content-Type: application/json\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        request = head.encode("latin-1") + b"\r\n" + body
        timeout = timeout_s or self.read_timeout_s
        while True:
            conn = self._acquire_idle(t) or await self._open(t)
            try:
                conn.writer.write(request)
                async with asyncio.timeout(_until(timeout, deadline)):
                    raw = await conn.reader.readuntil(b"\r\n\r\n")
            except TimeoutError:  # before OSError, of which it is a subclass
                conn.close()
                raise UpstreamTimeout(
                    f"{t.host}:{t.port} did not answer {_late(timeout, deadline)}"
                ) from None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                conn.close()
                if conn.reused:
                    continue  # the server closed an idle connection: once more on a new one
                raise UpstreamIOError(f"{t.host}:{t.port} closed the connection: {exc}") from None
            except BaseException:
                # Cancelled mid-exchange (a probe stopped at shutdown, a client gone): the
                # connection is in an unknown state, and must not be left to the collector.
                conn.close()
                raise
            lines = raw.decode("latin-1").split("\r\n")
            try:
                status = int(lines[0].split(" ", 2)[1])
            except (IndexError, ValueError):
                conn.close()
                raise UpstreamIOError(f"{t.host}:{t.port} sent a bad status line") from None
            out: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    out[name.strip().lower()] = value.strip()
            return t, conn, status, out

    async def _chunks(
        self, conn: _Conn, headers: dict[str, str], timeout: float, deadline: float
    ) -> AsyncIterator[bytes]:
        """The body's bytes as they come; sets ``conn.reused`` to whether it can be kept."""
        reader = conn.reader
        try:
            if "chunked" in headers.get("transfer-encoding", ""):
                # Every chunk already received is decoded at once and handed on together: an
                # SSE upstream sends one chunk per event, often several per network read.
                pending, done = b"", False
                while not done:
                    async with asyncio.timeout(_until(timeout, deadline)):
                        data = await reader.read(65536)
                    if not data:
                        raise asyncio.IncompleteReadError(pending, None)
                    pending += data
                    out, pending, done = _dechunk(pending)
                    if out:
                        yield out
                conn.reused = True
            elif "content-length" in headers:
                length = int(headers["content-length"])
                if length:
                    async with asyncio.timeout(_until(timeout, deadline)):
                        data = await reader.readexactly(length)
                    yield data
                conn.reused = True
            else:
                while True:
                    async with asyncio.timeout(_until(timeout, deadline)):
                        data = await reader.read(65536)
                    if not data:
                        break
                    yield data
                conn.reused = False
            if headers.get("connection", "").lower() == "close":
                conn.reused = False
        except TimeoutError:  # before OSError, of which it is a subclass
            conn.reused = False
            raise UpstreamTimeout(
                f"the upstream stopped answering: nothing came {_late(timeout, deadline)}"
            ) from None
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            conn.reused = False
            raise UpstreamIOError(f"the upstream's answer broke off: {exc}") from None

    # -- the calls the pool makes -----------------------------------------------------------

    async def request(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Response:
        body = b"" if json_body is None else json.dumps(json_body).encode()
        deadline = self._deadline(timeout_s)
        t, conn, status, out = await self._start(method, url, body, headers, timeout_s, deadline)
        conn.reused = False
        try:
            content = b"".join(
                [
                    c
                    async for c in self._chunks(
                        conn, out, timeout_s or self.read_timeout_s, deadline
                    )
                ]
            )
        finally:
            if conn.reused:
                self._release(t, conn)
            else:
                conn.close()
        return Response(status, out, content)

    async def stream_lines(
        self,
        url: str,
        *,
        json_body: Any,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Response | None, AsyncIterator[list[str]]]:
        """POST and return (status, the whole answer when it is an error, the body's lines in
        batches: the complete lines of each network read together, so a caller can forward
        what arrived at once in one write)."""
        body = json.dumps(json_body).encode()
        deadline = self._deadline(None)
        t, conn, status, out = await self._start("POST", url, body, headers, None, deadline)
        conn.reused = False
        chunks = self._chunks(conn, out, self.read_timeout_s, deadline)
        if status >= 400:
            try:
                content = b"".join([c async for c in chunks])
            finally:
                self._finish(t, conn)
            return status, Response(status, out, content), _nothing()

        async def lines() -> AsyncGenerator[list[str], None]:
            pending = b""
            async for chunk in chunks:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                if complete:
                    yield [line.rstrip(b"\r").decode() for line in complete]
            if pending:
                yield [pending.rstrip(b"\r").decode()]

        return status, None, _Lines(lines(), lambda: self._finish(t, conn))

    def _deadline(self, timeout_s: float | None) -> float:
        """The event loop time by which the whole exchange must be done (a call's own
        ``timeout_s``, a probe's, bounds it too)."""
        total = min(self.total_timeout_s, timeout_s) if timeout_s else self.total_timeout_s
        return asyncio.get_running_loop().time() + total

    def _finish(self, t: _Target, conn: _Conn) -> None:
        if conn.reused:
            self._release(t, conn)
        else:
            conn.close()


class _Lines:
    """A body's lines as an async iterator whose ``aclose`` gives the connection back (to the
    idle pool when the body was read to its end, else closed), also when iteration never
    started or stopped half way: a bare generator's ``finally`` would not run then."""

    __slots__ = ("_finish", "_lines")

    def __init__(self, lines: AsyncGenerator[list[str], None], finish: Callable[[], None]):
        self._lines: AsyncGenerator[list[str], None] | None = lines
        self._finish = finish

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> list[str]:
        if self._lines is None:
            raise StopAsyncIteration
        try:
            return await self._lines.__anext__()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        lines, self._lines = self._lines, None
        if lines is not None:
            try:
                await lines.aclose()
            finally:
                self._finish()


def _until(timeout: float, deadline: float) -> float:
    """The read timeout, cut short by the exchange's deadline."""
    return max(0.0, min(timeout, deadline - asyncio.get_running_loop().time()))


def _late(timeout: float, deadline: float) -> str:
    """Which limit ran out, for the error message."""
    left = deadline - asyncio.get_running_loop().time()
    return f"within {timeout:g} s" if left > 0.001 else "within the exchange's total timeout"


def _dechunk(buffer: bytes) -> tuple[bytes, bytes, bool]:
    """Decode the complete chunks at the start of ``buffer``: (their data, what is left, whether
    the last chunk and the end of the body were in it)."""
    out: list[bytes] = []
    at, end = 0, len(buffer)
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            break
        size = int(buffer[at:line_end].split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            # The last chunk; no trailers expected, the body ends with an empty line.
            trailer_end = buffer.find(b"\r\n\r\n", line_end)
            if trailer_end < 0:
                break
            return b"".join(out), b"", True
        data_end = line_end + 2 + size
        if data_end + 2 > end:
            break
        out.append(buffer[line_end + 2 : data_end])
        at = data_end + 2
    return b"".join(out), buffer[at:], False


async def _nothing() -> AsyncIterator[list[str]]:
    return
    yield  # an empty async generator
