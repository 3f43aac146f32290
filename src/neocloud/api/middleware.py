"""ASGI middleware: request ids, the body-size bound and ``Idempotency-Key`` replay.

Idempotency follows Stripe's rules. The first POST with a key runs and its response is stored;
a repeat with the same key and the same body gets the stored response (with
``Idempotent-Replayed: true``); the same key with a different body is a 409; a repeat while the
first is still running is a 409 too. Server errors are not stored, so a retry after one runs
again. Three rules keep the store from weakening authentication:

* the caller is authenticated before anything is looked up or replayed, and keys are scoped to
  the authenticated API key (its id): a revoked or expired key replays nothing (the app answers
  its 401), and another key using the same ``Idempotency-Key`` runs its own request;
* nothing that can authenticate is stored: the response fields named in
  ``SECRET_RESPONSE_FIELDS`` (an API key's ``secret``) are stored as ``null``, so a replay
  answers the same object with them ``null`` and says so in ``Redacted-Fields``;
* a key lives ``ttl`` (24 h, Stripe's rule): a repeat after that is a fresh request, and each
  new key purges at most ``PURGE_BATCH`` expired rows, so the table does not grow without bound.

A crash loses nothing and does nothing twice. The key's row is claimed before the request runs,
as a lease (``locked_until``, ``lease_s``) with a fencing token, and the request's first
database transaction that commits a write also stamps the row's ``effect_at`` in that same
transaction (``neocloud.db.effects``; the stamp is fenced on the token, so a run whose claim a
retry took over has its write refused and rolled back). If the process dies between claiming
and storing the response, the row says which of two things happened:

* nothing committed (no ``effect_at``): once the lease lapses a retry takes the claim over and
  runs the request, exactly once;
* the effect committed (``effect_at`` set) but the response was lost: a retry never runs it
  again; it is answered 409 ``idempotency_outcome_unknown`` (the request did take effect; look
  up its result, e.g. list the instances), as is a retry of a request that failed with a 5xx
  (or a 401/409/429) after its first write committed. While the lease holds, a retry gets 409
  ``idempotency_key_in_use``, as before.

The stored response is written after the handler, not in the effect's transaction: FastAPI
renders it after the handler's transactions, so storing it with the effect would mean each
handler rendering its own answer inside its transaction; ``idempotency_outcome_unknown`` is what
a caller gets in the window between the two instead.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import anyio
import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from neocloud.api.asgi import ASGIApp, Message, Receive, Scope, Send, body_too_large, replay_body
from neocloud.db.base import table_of
from neocloud.db.effects import EffectMark, marking_effects
from neocloud.db.engine import Database
from neocloud.db.tables import IdempotencyRow
from neocloud.kernel.auth import Principal
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import AuthenticationFailed, Conflict, InvalidRequest, NeocloudError
from neocloud.kernel.ids import random_id

IDEMPOTENCY_KEYS = table_of(IdempotencyRow)

MAX_KEY_LENGTH = 255
# Response fields that can authenticate (an API key's ``secret``): never stored, so a replay
# answers them as ``null``. A route whose response carries a new kind of secret names its
# field here; tests/security/test_secrets.py fails for a secret-looking field not listed.
SECRET_RESPONSE_FIELDS = frozenset(
    {"secret", "private_key", "bmc_password", "token", "password", "connection_string"}
)  # keys, node credentials (an ssh key, a BMC password), agent tokens
# Expired rows purged per new key: bounded work on the request path, and the table still
# shrinks faster than one request a call can grow it.
PURGE_BATCH = 100
# Statuses that say nothing final about the request: not stored, so a retry runs again.
_NOT_STORED = {401, 409, 429}


def new_request_id() -> str:
    """``req_`` and 24 hex digits: 96 random bits (``kernel.ids.random_id``), never a counter."""
    return random_id("req")


class RequestContextMiddleware:
    """Give every request the platform's own id (``scope["state"]["request_id"]``, what the
    audit log records) and answer an ``X-Request-Id``: the caller's own, if it sent one (for
    its tracing; never recorded, as a caller could choose another request's id), else ours."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        echoed = (given if given and len(given) <= 128 else request_id).encode("latin-1")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", echoed))
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodyLimitAndIdempotencyMiddleware:
    """Bound request bodies; store and replay POSTs sent with an ``Idempotency-Key``.

    ``authenticate`` resolves a bearer token to its principal or raises
    ``AuthenticationFailed``; ``ttl_s`` is how long a stored response is replayed, in seconds;
    ``lease_s`` how long a running request holds its key before a retry may take it over.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        db: Database,
        clock: Clock,
        authenticate: Callable[[str], Principal],
        max_body_bytes: int,
        ttl_s: int,
        lease_s: float = 60.0,
        path_limits: dict[str, int] | None = None,
    ) -> None:
        self.app, self.db, self.clock, self.authenticate = app, db, clock, authenticate
        self.max_body_bytes, self.ttl = max_body_bytes, timedelta(seconds=ttl_s)
        self.lease = timedelta(seconds=lease_s)
        self.path_limits = path_limits or {}  # a path whose bodies have their own bound

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH", "DELETE"):
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read_body(scope, receive)
        except NeocloudError as exc:
            await _send_error(send, exc)
            return
        replay = replay_body(body, receive)
        key = _header(scope, b"idempotency-key")
        token = bearer_token(_header(scope, b"authorization"))
        if scope["method"] != "POST" or key is None or token is None:
            await self.app(scope, replay, send)
            return
        if not key or len(key) > MAX_KEY_LENGTH:
            await _send_error(
                send,
                InvalidRequest(
                    f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} characters",
                    code="invalid_idempotency_key",
                    param="Idempotency-Key",
                ),
            )
            return
        try:
            principal = await anyio.to_thread.run_sync(self.authenticate, token)
        except AuthenticationFailed:
            # Nothing is looked up or stored for a key that does not authenticate: the app
            # answers its precise 401 (and the audit log records it) as for any other call.
            await self.app(scope, replay, send)
            return
        scope.setdefault("state", {})["principal"] = principal  # the audit log's actor
        caller = principal.key_id
        request_hash = hashlib.sha256(
            scope["method"].encode() + b" " + scope["path"].encode() + b"\n" + _canonical(body)
        ).hexdigest()
        try:
            claimed = await anyio.to_thread.run_sync(
                self.claim, caller, key, scope["method"], scope["path"], request_hash
            )
        except NeocloudError as exc:
            await _send_error(send, exc)
            return
        if not isinstance(claimed, str):  # a repeat: the stored answer
            status, payload = claimed
            await _send_json(send, status, payload, replayed=True, redacted=_redacted(payload))
            return
        claim = Claim(caller, key, claimed)
        captured = _Capture(send)
        try:
            with marking_effects(EffectMark(lambda s: self.record_effect(s, claim))):
                await self.app(scope, replay, captured.send)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.release, claim)
            raise
        if captured.status is None or captured.status >= 500 or captured.status in _NOT_STORED:
            await anyio.to_thread.run_sync(self.release, claim)
        else:
            stored_body = redact_secrets(captured.json_body())
            await anyio.to_thread.run_sync(self.store, claim, captured.status, stored_body)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.path_limits.get(scope["path"], self.max_body_bytes)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise body_too_large(limit)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise body_too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    # The database steps run in a worker thread; each is one short transaction.
    def claim(
        self, caller: str, key: str, method: str, path: str, request_hash: str
    ) -> str | tuple[int, Any]:
        """Claim the key (return the new lease token) or answer a repeat (return the stored
        status and body, or raise the 409 that says why it cannot run now)."""
        now = self.clock.now()
        cutoff = now - self.ttl
        table = IDEMPOTENCY_KEYS
        with self.db.transaction() as s:
            s.execute(
                sa.delete(table)
                .where(table.c.scope == caller, table.c.key == key)
                .where(table.c.created_at < cutoff)
            )
            purge_expired(s, cutoff)
        token = secrets.token_hex(16)
        lease = {"lease_token": token, "locked_until": now + self.lease}
        for _ in range(3):  # the row went (expired) or changed hands between two steps: again
            try:
                with self.db.engine.begin() as conn:
                    conn.execute(
                        sa.insert(table).values(
                            scope=caller,
                            key=key,
                            method=method,
                            path=path,
                            request_hash=request_hash,
                            created_at=now,
                            **lease,
                        )
                    )
                return token
            except IntegrityError:
                pass
            with self.db.transaction() as s:
                row = s.execute(
                    sa.select(table).where(table.c.scope == caller, table.c.key == key)
                ).first()
            if row is None:
                continue
            if row.request_hash != request_hash:
                raise Conflict(
                    "this Idempotency-Key was used with a different request; use a new key",
                    code="idempotency_key_reused",
                    param="Idempotency-Key",
                )
            if row.status_code is not None:
                return row.status_code, row.response_body
            if row.locked_until is not None and row.locked_until > now:
                raise _in_use()
            if row.effect_at is not None:
                raise Conflict(
                    "the request with this Idempotency-Key took effect (at "
                    f"{row.effect_at:%Y-%m-%dT%H:%M:%SZ}) but its response was lost; it will "
                    "not run again: look up what it made instead of retrying",
                    code="idempotency_outcome_unknown",
                    param="Idempotency-Key",
                )
            # Its lease lapsed and nothing of it committed: its process died, or it is still
            # running (its write will then be refused: the token fences it). Run it here.
            with self.db.transaction() as s:
                taken = s.execute(
                    sa.update(table)
                    .where(table.c.scope == caller, table.c.key == key)
                    .where(table.c.lease_token.is_not_distinct_from(row.lease_token))
                    .where(table.c.status_code.is_(None), table.c.effect_at.is_(None))
                    .values(**lease)
                )
            if _rowcount(taken) == 1:
                return token
        raise _in_use()

    def record_effect(self, session: Session, claim: Claim) -> None:
        """Stamp ``claim``'s key "took effect", in ``session``'s transaction (the request's first
        committed write); refuse that write if a retry has taken the key over."""
        table = IDEMPOTENCY_KEYS
        done = session.execute(
            sa.update(table)
            .where(table.c.scope == claim.caller, table.c.key == claim.key)
            .where(table.c.lease_token == claim.token)
            .values(effect_at=sa.func.coalesce(table.c.effect_at, self.clock.now()))
        )
        if _rowcount(done) != 1:
            raise Conflict(
                "a retry with this Idempotency-Key took the request over after its lease "
                "lapsed; this run changed nothing",
                code="idempotency_key_in_use",
                param="Idempotency-Key",
            )

    def store(self, claim: Claim, status: int, body: Any) -> None:
        table = IDEMPOTENCY_KEYS
        with self.db.transaction() as s:
            s.execute(
                sa.update(table)
                .where(table.c.scope == claim.caller, table.c.key == claim.key)
                .where(table.c.lease_token == claim.token)
                .values(status_code=status, response_body=body, locked_until=None)
            )

    def release(self, claim: Claim) -> None:
        """Give the key up after an answer that is not stored: forget it if nothing of the
        request committed (a retry runs it), else lapse its lease at once (a retry is told
        ``idempotency_outcome_unknown``)."""
        table = IDEMPOTENCY_KEYS
        mine = sa.and_(
            table.c.scope == claim.caller,
            table.c.key == claim.key,
            table.c.lease_token == claim.token,
        )
        with self.db.transaction() as s:
            s.execute(sa.delete(table).where(mine, table.c.effect_at.is_(None)))
            s.execute(sa.update(table).where(mine).values(locked_until=self.clock.now()))


@dataclass(frozen=True)
class Claim:
    """The key a request runs under: the caller's scope, the key, and the lease token that
    fences the request's writes."""

    caller: str
    key: str
    token: str


def _rowcount(result: sa.Result[Any]) -> int:
    return cast(CursorResult[Any], result).rowcount


def _in_use() -> Conflict:
    return Conflict(
        "a request with this Idempotency-Key is still being processed; retry later",
        code="idempotency_key_in_use",
        param="Idempotency-Key",
    )


def purge_expired(session: Session, cutoff: datetime, *, limit: int = PURGE_BATCH) -> int:
    """Delete at most ``limit`` idempotency rows created before ``cutoff``, oldest first;
    return how many went."""
    table = IDEMPOTENCY_KEYS
    oldest = (
        sa.select(table.c.scope, table.c.key)
        .where(table.c.created_at < cutoff)
        .order_by(table.c.created_at)
        .limit(limit)
    )
    victims = session.execute(oldest).all()
    if not victims:
        return 0
    session.execute(
        sa.delete(table).where(
            sa.tuple_(table.c.scope, table.c.key).in_([(v.scope, v.key) for v in victims])
        )
    )
    return len(victims)


def redact_secrets(payload: Any) -> Any:
    """``payload`` with every field named in ``SECRET_RESPONSE_FIELDS`` (at any depth) set to
    ``None``: what the store keeps of a response."""
    if isinstance(payload, dict):
        return {
            name: None if name in SECRET_RESPONSE_FIELDS else redact_secrets(value)
            for name, value in payload.items()
        }
    if isinstance(payload, list):
        return [redact_secrets(item) for item in payload]
    return payload


def _redacted(payload: Any) -> list[str]:
    """The secret fields a stored response holds (as ``null``), sorted, for ``Redacted-Fields``."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            found.update(name for name in node if name in SECRET_RESPONSE_FIELDS)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(payload)
    return sorted(found)


def bearer_token(header: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or None for anything else."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class _Capture:
    """Pass a response through while keeping a copy of its status and body."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status: int | None = None
        self._chunks: list[bytes] = []

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            self._chunks.append(message.get("body", b""))
        await self._send(message)

    def json_body(self) -> Any:
        raw = b"".join(self._chunks)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return {"_raw": raw.decode("utf-8", "replace")}


def _canonical(body: bytes) -> bytes:
    """Hash JSON bodies by content, so key order and spacing do not make a different request."""
    try:
        return json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        return body


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1")).strip()
    return None


async def _send_error(send: Send, exc: NeocloudError) -> None:
    await _send_json(send, exc.status, exc.to_body())


async def _send_json(
    send: Send,
    status: int,
    payload: Any,
    *,
    replayed: bool = False,
    redacted: Sequence[str] = (),
) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if replayed:
        headers.append((b"idempotent-replayed", b"true"))
    if redacted:
        headers.append((b"redacted-fields", ", ".join(redacted).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
