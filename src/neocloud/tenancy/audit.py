"""The audit log: one row per mutating API call, written by the API's audit middleware."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from neocloud.db.engine import Database
from neocloud.db.pagination import Page, decode_cursor, encode_cursor
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import PermissionDenied
from neocloud.kernel.ids import is_id, new_id
from neocloud.tenancy.access import require_read
from neocloud.tenancy.tables import AuditEventRow, OrgRow

_ORG_IN_PATH = re.compile(r"/orgs/(org_[0-9A-Z]{26})(?:/|$)")
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class AuditRecord:
    """What the middleware saw of one call: no bodies, no secrets."""

    method: str
    path: str
    status_code: int
    request_id: str | None
    actor: Principal | None
    target_id: str | None


def record_event(*, db: Database, clock: Clock, record: AuditRecord) -> AuditEventRow:
    """Write one audit event into the log of the org it belongs to (``audit_org``)."""
    target = record.target_id if record.target_id and len(record.target_id) <= 64 else None
    actor = record.actor
    with db.transaction() as s:
        org_id, outsider = audit_org(record, target)
        if org_id is None:
            org_id = s.scalar(sa.select(OrgRow.id).where(OrgRow.is_operator).limit(1))
        row = AuditEventRow(
            id=new_id("aud"),
            at=clock.now(),
            actor_key_id=actor.key_id if actor else None,
            actor_user_id=actor.user_id if actor else None,
            org_id=org_id,
            method=record.method[:8],
            path=record.path[:512],
            status_code=record.status_code,
            request_id=record.request_id[:128] if record.request_id else None,
            target_id=target,
            outsider=outsider,
        )
        s.add(row)
    return row


def audit_org(record: AuditRecord, target: str | None) -> tuple[str | None, bool]:
    """The org whose log an event goes into (``None``: the operator's security log), and
    whether it is an outsider's attempt.

    An org's log holds what was done to it and what its own members tried, never what
    outsiders tried: an org's log must not be writable by anyone who can reach the API.

    * No authenticated caller (a 401, anything without a key): the operator's security log,
      flagged as an outsider's.
    * A call on ``/orgs/{id}/…`` goes into that org's log when the caller belongs to it, or
      when operator staff succeeded at it (the operator acted on the tenant's org). Any other
      caller's attempt (another org's key: always refused) goes into the caller's own log,
      flagged; operator staff's refused attempt goes into the operator's log, unflagged (the
      tenant's org did not change).
    * ``POST /orgs`` that made an org: the new org's log starts with its creation.
    * Anything else: the caller's org.
    """
    actor = record.actor
    if actor is None:
        return None, True
    in_path = _ORG_IN_PATH.search(record.path)
    if in_path:
        named = in_path.group(1)
        if named == actor.org_id or (actor.is_operator and record.status_code < 400):
            return named, False
        return actor.org_id, not actor.is_operator
    if target is not None and is_id(target, "org") and record.status_code < 400:
        return target, False
    return actor.org_id, False


def list_events(
    *,
    db: Database,
    actor: Principal,
    limit: int,
    after: str | None,
    org_id: str | None = None,
    actor_id: str | None = None,
    method: str | None = None,
    since: datetime | None = None,
) -> Page[AuditEventRow]:
    """Operator staff read every event (optionally of one org); org admins read their org's.

    Newest first, so the latest changes lead the first page however long the log is; the
    cursor of a page is its last (oldest) id and the next page is the events before it.
    ``actor_id`` matches the acting user id or key id.
    """
    if not actor.is_operator:
        if not actor.role.at_least(Role.ADMIN):
            raise PermissionDenied(
                "reading the audit log needs role admin or higher", code="insufficient_role"
            )
        if org_id is not None:
            require_read(actor, org_id)  # another org: 404, as it is everywhere
        org_id = actor.org_id
    stmt = sa.select(AuditEventRow)
    if org_id is not None:
        stmt = stmt.where(AuditEventRow.org_id == org_id)
    if actor_id is not None:
        stmt = stmt.where(
            sa.or_(AuditEventRow.actor_user_id == actor_id, AuditEventRow.actor_key_id == actor_id)
        )
    if method is not None:
        stmt = stmt.where(AuditEventRow.method == method.upper())
    if since is not None:
        stmt = stmt.where(AuditEventRow.at >= since)
    if after:
        stmt = stmt.where(AuditEventRow.id < decode_cursor(after))
    with db.transaction() as s:
        rows = list(s.scalars(stmt.order_by(AuditEventRow.id.desc()).limit(limit + 1)))
    has_more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, has_more, encode_cursor(rows[-1].id) if has_more and rows else None)
