"""Usage events: metered facts (Studio tokens, GPU usage) that callers send in batches.

A batch is stored in one transaction, all or nothing; a replay of (org, source, id) is counted as
a duplicate, not stored again. Rating reads the stored events (``billing.service``). Only the
platform writes them (``require_usage_writer``): the Studio's meter in process, operator admins
over the API.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from neocloud.billing.tables import UsageEventRow
from neocloud.db.engine import Database
from neocloud.kernel.auth import Principal
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import PermissionDenied, ValidationFailed
from neocloud.kernel.ids import new_id

# Events may arrive this late (a month closes, then a grace period for stragglers).
LATE_LIMIT = timedelta(days=35)
# Nor from the future beyond clock skew.
EARLY_LIMIT = timedelta(minutes=5)
MAX_BATCH = 1000


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One event as a caller sends it (CloudEvents-like); ``id`` is unique per source."""

    id: str
    source: str
    type: str
    subject: str
    time: datetime
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    duplicates: int


TOKENS = "tokens"


def _bad_tokens(ev: UsageEvent) -> bool:
    """A ``tokens`` event carries non-negative integer ``input_tokens``/``output_tokens``."""
    if ev.type != TOKENS:
        return False
    counts = [ev.data.get("input_tokens", 0), ev.data.get("output_tokens", 0)]
    return not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)


def _check_times(events: Sequence[UsageEvent], now: datetime) -> None:
    bad = []
    for i, ev in enumerate(events):
        if _bad_tokens(ev):
            bad.append({"index": i, "id": ev.id, "reason": "invalid_token_counts"})
        elif ev.time < now - LATE_LIMIT:
            bad.append({"index": i, "id": ev.id, "reason": "too_late"})
        elif ev.time > now + EARLY_LIMIT:
            bad.append({"index": i, "id": ev.id, "reason": "in_the_future"})
    if bad:
        first = bad[0]
        raise ValidationFailed(
            f"{len(bad)} event(s) refused: events may be at most {LATE_LIMIT.days} days late, "
            "not in the future, and tokens events carry non-negative integer counts (first: "
            f"events[{first['index']}] id {first['id']!r}, {first['reason']})",
            code="invalid_usage_event",
            param=f"events[{first['index']}]."
            + ("data" if first["reason"] == "invalid_token_counts" else "time"),
            details={"rejected": bad},
        )


def require_usage_writer(principal: Principal) -> None:
    """Only the platform writes usage: an operator admin over the API, the platform's own
    services in process. A tenant reporting its own billable usage could only lower its bill
    (a zero-token event under the id of a request still to come is counted and the request's
    own usage dropped as its duplicate), so tenants get 403 ``usage_events_operator_only``
    and operator staff below admin 403 ``operator_admin_only``."""
    if not principal.is_operator:
        raise PermissionDenied(
            "usage events are the platform's metering: only an operator admin may record "
            "them; the platform meters your usage itself (see GET /api/v1/studio/usage)",
            code="usage_events_operator_only",
        )
    principal.require_operator(write=True)


def record_usage_events(
    *, db: Database, clock: Clock, org_id: str, events: Sequence[UsageEvent]
) -> IngestResult:
    """Store a batch for ``org_id`` in one transaction; a replay of (org, source, id) is counted
    as a duplicate, not stored again. In-process callers (the Studio) use this directly; the
    API checks the caller's org first. All-or-nothing: one event out of range refuses the batch.
    """
    if len(events) > MAX_BATCH:
        raise ValidationFailed(
            f"at most {MAX_BATCH} events per batch, not {len(events)}",
            code="batch_too_large",
            param="events",
        )
    if not events:
        return IngestResult(0, 0)
    now = clock.now()
    _check_times(events, now)
    ids = [new_id("use", at=now) for _ in events]
    with db.transaction() as s:
        conn = s.connection()
        if db.dialect == "postgresql":
            inserted = _pg_insert(conn, org_id, now, ids, events)
        else:
            rows = [
                {
                    "id": row_id,
                    "org_id": org_id,
                    "source": ev.source,
                    "event_id": ev.id,
                    "type": ev.type,
                    "subject": ev.subject,
                    "time": ev.time,
                    "data": ev.data,
                    "received_at": now,
                }
                for row_id, ev in zip(ids, events, strict=True)
            ]
            inserted = len(conn.execute(_insert_events(), rows).all())
    return IngestResult(inserted, len(events) - inserted)


# Duplicates are rows the insert skipped: ``ON CONFLICT (org, source, id) DO NOTHING`` stores
# each (org, source, id) once, whether the replay is of an earlier batch or of an event earlier
# in the same batch, and the count of rows it stored says how many were new. No ORM object is
# made per row.
#
# PostgreSQL: one statement per batch whatever its size, the per-event columns passed as seven
# arrays (psycopg's binary format: nothing to escape or parse) and expanded by ``unnest`` on the
# server; a multi-row VALUES would carry 9,000 parameters that the driver parses on every call.
_PG_INSERT = (
    "INSERT INTO usage_events "
    "(id, org_id, source, event_id, type, subject, time, data, received_at) "
    "SELECT id, %b::text, source, event_id, type, subject, time, CAST(data AS jsonb), "
    "%b::timestamptz "
    "FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], "
    "%b::timestamptz[], %b::text[]) AS u(id, source, event_id, type, subject, time, data) "
    "ON CONFLICT (org_id, source, event_id) DO NOTHING"
)


def _pg_insert(
    conn: sa.Connection,
    org_id: str,
    now: datetime,
    ids: list[str],
    events: Sequence[UsageEvent],
) -> int:
    """The number of rows stored (the INSERT's row count: conflicting rows are not counted)."""
    params = (
        org_id,
        now,
        ids,
        [ev.source for ev in events],
        [ev.id for ev in events],
        [ev.type for ev in events],
        [ev.subject for ev in events],
        [ev.time for ev in events],
        [json.dumps(ev.data) for ev in events],
    )
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(_PG_INSERT, params, binary=True)
        return int(cursor.rowcount)
    finally:
        cursor.close()


def _insert_events() -> sa.Insert:
    """SQLite: the Core insert executed with the list of rows, which SQLAlchemy sends as
    multi-row statements ("insertmanyvalues"), compiled once and cached."""
    table = UsageEventRow.__table__
    assert isinstance(table, sa.Table)
    return (
        sqlite.insert(table)
        .on_conflict_do_nothing(index_elements=["org_id", "source", "event_id"])
        .returning(table.c.id)
    )
