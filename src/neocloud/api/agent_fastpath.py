"""A pure-ASGI route for the node agents' heartbeat: ``POST /api/v1/agent/heartbeat``.

31,250 nodes beating every 10 s is 3,125 heartbeats a second; through FastAPI's routing,
dependency solving and the body and idempotency middleware, the request path cost more CPU
than the heartbeat's own database work. This middleware sits inside the platform's generic
layers that every answer needs (latency histogram, request id, rate limit, audit: they run as
for any request) and in front of the body-limit and idempotency middleware and FastAPI. It
serves a heartbeat itself only when everything about it is ordinary, and it answers only
success: anything else goes on, untouched (the body replayed as it was received), to the full
stack, which answers exactly as before:

* not a bearer agent token (none, an API key: the route's 401s), or an ``Idempotency-Key``;
* a body that is not JSON (by ``Content-Type``), is over the size bound (the 413), does not
  parse or does not validate as ``HeartbeatIn`` (the route's 400 and 422 naming the field);
* a token that is unknown or revoked (401), another node's (403), or any other refusal the
  heartbeat raises: its transaction rolled back, so the full stack runs it afresh and answers
  (and audits) the refusal.

What it serves is what the route serves: the same validation (``HeartbeatIn``, in Python mode
after ``json.loads``, as FastAPI validates a body), the same recording and the same JSON answer;
it sets ``scope["endpoint"]`` to the route's function, so the latency histogram's ``handler``
label is the same. Concurrent beats are coalesced (group commit): while a batch is recorded in
a worker thread (``fleet.agent_api.answer_heartbeats``: one transaction for all of it) the next
ones gather; a lone beat is a batch of one. A refused beat of a batch wrote nothing and goes to
the full stack alone; a batch that fails sends each of its beats there, where each gets the
answer it would have got alone (an unexpected error: the audit records it and the last-resort
handler answers the 500). Tokens are not cached, so a revoked one is refused on its next beat.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
from pydantic import ValidationError

from neocloud.api.asgi import ASGIApp, Message, Receive, Scope, Send
from neocloud.fleet import agent_api
from neocloud.fleet.agent_schemas import HeartbeatIn, HeartbeatOut
from neocloud.kernel.errors import NeocloudError

HEARTBEAT_PATH = "/api/v1/agent/heartbeat"
# Concurrent heartbeats are coalesced: while a batch is being recorded (one transaction, in a
# worker thread) the next ones gather, and go together when a runner is free. At most this many
# batches run at once per process (SQLite takes one writer at a time anyway), each of at most
# MAX_BATCH beats (a transaction held for milliseconds, not longer).
CONCURRENT_BATCHES = 2
MAX_BATCH = 32


class AgentHeartbeatFastPath:
    """Serve ordinary agent heartbeats without FastAPI (see the module); ``state`` is the
    app's ``state`` (its ``ctx`` and ``node_busy`` are read at each request, as the route
    reads them)."""

    def __init__(self, app: ASGIApp, *, state: Any, max_body_bytes: int) -> None:
        self.app = app
        self.state = state
        self.max_body_bytes = max_body_bytes
        self.batches = _Batches(self._record)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != HEARTBEAT_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        authorization = content_type = declared = None
        for name, value in scope["headers"]:
            name = name.lower()
            if name == b"authorization":
                authorization = authorization if authorization is not None else value
            elif name == b"content-type":
                content_type = content_type if content_type is not None else value
            elif name == b"content-length":
                declared = declared if declared is not None else value
            elif name == b"idempotency-key":
                await self.app(scope, receive, send)
                return
        token = _agent_token(authorization)
        if (
            token is None
            or not _is_json(content_type)
            or (declared is not None and _over(declared, self.max_body_bytes))
        ):
            await self.app(scope, receive, send)
            return
        received, raw = await self._read(receive)
        beat = _parse(raw) if raw is not None else None
        if beat is None:
            await self.app(scope, _replay(received, receive), send)
            return
        answer = await self.batches.submit((token, beat))
        if answer is None:  # refused, or the batch failed: the full stack runs it on its own
            await self.app(scope, _replay(received, receive), send)
            return
        scope["endpoint"] = agent_api.heartbeat  # the latency histogram's handler label
        body = answer.model_dump_json().encode()
        headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _record(self, beats: list[tuple[str, HeartbeatIn]]) -> list[HeartbeatOut | None]:
        """Record a batch (in a worker thread): each beat's answer, or None where the route
        would answer otherwise (a refusal, or any error: then for all of them)."""
        ctx = self.state.ctx
        busy = getattr(self.state, "node_busy", None)
        try:
            done = agent_api.answer_heartbeats(ctx, busy, beats)
        except Exception:  # rolled back; run alone, each beat gets the answer it would have got
            return [None] * len(beats)
        return [a if isinstance(a, HeartbeatOut) else None for a in done]

    async def _read(self, receive: Receive) -> tuple[list[Message], bytes | None]:
        """The messages received and the whole body; the body is None when it grew past the
        bound or the client went away (the full stack then answers from the messages)."""
        received: list[Message] = []
        size = 0
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                return received, None
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return received, None
            if not message.get("more_body", False):
                break
        if len(received) == 1:
            return received, received[0].get("body", b"")
        return received, b"".join(m.get("body", b"") for m in received)


def _agent_token(authorization: bytes | None) -> str | None:
    """The agent token the route's dependency would accept, or None (the route answers)."""
    if authorization is None:
        return None
    try:
        return agent_api.agent_token_of(authorization.decode("latin-1"))
    except NeocloudError:
        return None


def _is_json(content_type: bytes | None) -> bool:
    """``application/json`` (parameters allowed): a body FastAPI decodes as JSON."""
    if content_type is None:
        return False
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json"


def _over(declared: bytes, limit: int) -> bool:
    text = declared.strip()
    return not text.isdigit() or int(text) > limit


def _parse(raw: bytes) -> HeartbeatIn | None:
    """The heartbeat, validated as the route validates it, or None for any failure."""
    if not raw:
        return None
    try:
        return HeartbeatIn.model_validate(json.loads(raw))
    except (ValueError, ValidationError, RecursionError):
        return None


def _replay(received: list[Message], upstream: Receive) -> Receive:
    """A ``receive`` that hands on the messages already received, then ``upstream``'s."""
    pending = list(received)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return await upstream()

    return receive


class _Batches:
    """Group commit for heartbeats: ``submit`` waits for its beat's outcome; beats submitted
    while ``CONCURRENT_BATCHES`` batches are being recorded wait and go together in the next."""

    def __init__(
        self, record: Callable[[list[tuple[str, HeartbeatIn]]], list[HeartbeatOut | None]]
    ) -> None:
        self.record = record
        self.pending: list[tuple[tuple[str, HeartbeatIn], asyncio.Future[HeartbeatOut | None]]]
        self.pending = []
        self.running = 0

    async def submit(self, item: tuple[str, HeartbeatIn]) -> HeartbeatOut | None:
        future: asyncio.Future[HeartbeatOut | None] = asyncio.get_running_loop().create_future()
        self.pending.append((item, future))
        if self.running < CONCURRENT_BATCHES:
            self.running += 1
            asyncio.get_running_loop().create_task(self._drain())
        return await asyncio.shield(future)  # a client gone away does not cancel the batch

    async def _drain(self) -> None:
        while True:
            batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
            if not batch:  # another runner took them
                self.running -= 1
                return
            try:
                outcomes = await anyio.to_thread.run_sync(self.record, [item for item, _ in batch])
            except BaseException as exc:  # cancelled (the server stopping): none recorded
                self.running -= 1
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                raise
            more = bool(self.pending)
            if not more:  # before the answers go: a beat submitted next starts a runner
                self.running -= 1
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)
            if not more:
                return
