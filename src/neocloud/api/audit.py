"""Audit middleware: every POST/PUT/PATCH/DELETE under /api/v1 leaves an audit event.

It records who (from the principal the auth dependency put on ``scope["state"]``), what
(method, path, status, the ``id`` of the object answered), and the request id; failed attempts
too, 401s included. It never records bodies or secrets: of the response it keeps the ``id`` only.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio

from neocloud.api.asgi import ASGIApp, Message, Receive, Scope, Send
from neocloud.db.engine import Database
from neocloud.kernel.auth import Principal
from neocloud.kernel.clock import Clock
from neocloud.tenancy.audit import MUTATING_METHODS, AuditRecord, record_event

log = logging.getLogger("neocloud.audit")

API_PREFIX = "/api/v1/"
# Answered heartbeats are not audited (one per node every few seconds would dwarf the log; the
# node's agent_seen_at records them); refused ones are, as every failed attempt is.
QUIET_PATHS = frozenset({"/api/v1/agent/heartbeat"})
# Response bodies larger than this are not parsed for an id (they are lists or files).
_MAX_SCANNED_BYTES = 64 * 1024


class AuditMiddleware:
    def __init__(self, app: ASGIApp, *, db: Database, clock: Clock) -> None:
        self.app, self.db, self.clock = app, db, clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in MUTATING_METHODS
            or not scope["path"].startswith(API_PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        status: int | None = None
        chunks: list[bytes] = []
        size = 0

        async def capture(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                size += len(body)
                if size <= _MAX_SCANNED_BYTES:
                    chunks.append(body)
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            if not (scope["path"] in QUIET_PATHS and status is not None and status < 400):
                await self._audit(scope, status, chunks, size)

    async def _audit(
        self, scope: Scope, status: int | None, chunks: list[bytes], size: int
    ) -> None:
        state = scope.get("state") or {}
        principal = state.get("principal")
        record = AuditRecord(
            method=scope["method"],
            path=scope["path"],
            status_code=status if status is not None else 500,
            request_id=state.get("request_id"),
            actor=principal if isinstance(principal, Principal) else None,
            target_id=_target_id(b"".join(chunks)) if size <= _MAX_SCANNED_BYTES else None,
        )
        try:
            await anyio.to_thread.run_sync(self._record, record)
        except Exception:  # an audit failure must not turn a done change into an error
            log.exception("could not record audit event for %s %s", record.method, record.path)

    def _record(self, record: AuditRecord) -> None:
        record_event(db=self.db, clock=self.clock, record=record)


def _target_id(raw: bytes) -> str | None:
    if not raw:
        return None
    try:
        payload: Any = json.loads(raw)
    except ValueError:
        return None
    if isinstance(payload, dict) and isinstance(payload.get("id"), str):
        return str(payload["id"])
    return None
