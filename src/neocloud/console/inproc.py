"""The console's way to the API: a request to the platform's own ASGI app, in process, with the
signed-in user's key.

Every page reads and writes through ``/api/v1`` and ``/v1`` exactly as the CLI does, so the
console is authorized by the API's own rules and shows the API's own errors. The request goes
through the whole middleware stack (request ids, rate limits, audit, idempotency) but never
through a socket. ``stream`` relays a streamed answer chunk by chunk (httpx's ASGI transport
would buffer it), which the playground needs for its server-sent events.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

QueryValue = str | int | float | bool | list[str] | None


class ApiFailure(Exception):
    """The API said no: its status and its error envelope's code and message, in words."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _failure(status: int, body: bytes) -> ApiFailure:
    try:
        error = json.loads(body)["error"]
        return ApiFailure(status, str(error["code"]), str(error["message"]), error.get("param"))
    except (ValueError, KeyError, TypeError):
        return ApiFailure(status, "http_error", body.decode("utf-8", "replace")[:300] or "error")


def _query(params: dict[str, QueryValue] | None) -> bytes:
    pairs: list[tuple[str, str]] = []
    for name, value in (params or {}).items():
        if value is None:
            continue
        for item in value if isinstance(value, list) else [value]:
            pairs.append((name, str(item).lower() if isinstance(item, bool) else str(item)))
    return urlencode(pairs).encode("ascii")


class ApiCaller:
    """Calls one ASGI app as one API key; ``client`` names the browser's address in the scope
    (per-address limits and the audit log see the real caller)."""

    def __init__(self, app: AsgiApp, *, key: str, client: tuple[str, int] | None) -> None:
        self._app = app
        self._key = key
        self._client = client

    def _scope(
        self, method: str, path: str, params: dict[str, QueryValue] | None, body: bytes
    ) -> dict[str, Any]:
        headers = [
            (b"host", b"console.internal"),
            (b"authorization", f"Bearer {self._key}".encode()),
            (b"accept", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if body:
            headers.append((b"content-type", b"application/json"))
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": _query(params),
            "headers": headers,
            "client": self._client,
            "server": ("console.internal", 80),
            "state": {},
        }

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, QueryValue] | None = None,
        body: Any = None,
    ) -> Reply:
        """One call, answered whole; an answer of 400 or more raises ``ApiFailure``."""
        chunks: list[bytes] = []
        start: dict[str, Any] = {}
        async for kind, value in self._exchange(method, path, params, body):
            if kind == "start":
                start = value
            else:
                chunks.append(value)
        status = int(start.get("status", 500))
        data = b"".join(chunks)
        if status >= 400:
            raise _failure(status, data)
        headers = {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}
        return Reply(status, headers, data)

    async def get(self, path: str, **params: QueryValue) -> Any:
        return (await self.request("GET", path, params=params)).json()

    async def post(self, path: str, body: Any = None, **params: QueryValue) -> Any:
        reply = await self.request("POST", path, params=params, body=body if body else {})
        return reply.json() if reply.body else None

    async def stream(self, path: str, body: Any) -> AsyncIterator[bytes]:
        """POST ``body`` and yield the answer's body as it comes; a refusal (400 or more)
        raises ``ApiFailure`` before the first chunk."""
        status = 500
        failed: list[bytes] = []
        async for kind, value in self._exchange("POST", path, None, body):
            if kind == "start":
                status = int(value["status"])
            elif status >= 400:
                failed.append(value)
            elif value:
                yield value
        if status >= 400:
            raise _failure(status, b"".join(failed))

    async def _exchange(
        self, method: str, path: str, params: dict[str, QueryValue] | None, body: Any
    ) -> AsyncIterator[tuple[str, Any]]:
        raw = b"" if body is None else json.dumps(body).encode()
        scope = self._scope(method, path, params, raw)
        queue: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue()
        sent = False
        disconnected = asyncio.Event()

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                await queue.put(("start", message))
            elif message["type"] == "http.response.body":
                await queue.put(("body", bytes(message.get("body", b""))))

        async def run() -> None:
            try:
                await self._app(scope, receive, send)
            finally:
                await queue.put(None)

        task = asyncio.create_task(run())
        try:
            while (item := await queue.get()) is not None:
                yield item
            await task  # an exception in the app surfaces here
        finally:
            disconnected.set()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
