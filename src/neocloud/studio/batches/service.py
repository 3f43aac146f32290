"""Batches: the API's services (create, get, list, cancel) and the worker's (claim with a lease,
record finished requests, move states). One transaction each; a worker's write only lands
``WHERE id = … AND lease_token = …`` (a worker whose lease lapsed writes nothing)."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.db.engine import Database
from neocloud.kernel.auth import Principal
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from neocloud.kernel.ids import random_id
from neocloud.studio.batches.domain import (
    COMPLETION_WINDOWS,
    DONE,
    ENDPOINTS,
    METADATA_KEY_MAX,
    METADATA_MAX_PAIRS,
    METADATA_VALUE_MAX,
    WORKABLE,
    BatchStatus,
    after_cancel,
)
from neocloud.studio.files import Purpose, find_org_file
from neocloud.studio.tables import StudioBatchResultRow, StudioBatchRow


def _ts(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp())


def batch_out(row: StudioBatchRow) -> dict[str, Any]:
    """OpenAI's batch object."""
    errors = None if not row.errors else {"object": "list", "data": row.errors}
    return {
        "id": row.id,
        "object": "batch",
        "endpoint": row.endpoint,
        "errors": errors,
        "input_file_id": row.input_file_id,
        "completion_window": row.completion_window,
        "status": row.status,
        "output_file_id": row.output_file_id,
        "error_file_id": row.error_file_id,
        "created_at": _ts(row.created_at),
        "in_progress_at": _ts(row.in_progress_at),
        "expires_at": _ts(row.expires_at),
        "finalizing_at": _ts(row.finalizing_at),
        "completed_at": _ts(row.completed_at),
        "failed_at": _ts(row.failed_at),
        "expired_at": _ts(row.expired_at),
        "cancelling_at": _ts(row.cancelling_at),
        "cancelled_at": _ts(row.cancelled_at),
        "request_counts": {
            "total": row.request_total,
            "completed": row.request_completed,
            "failed": row.request_failed,
        },
        "metadata": row.batch_metadata,
        # Not OpenAI's: why an ``in_progress`` batch is not running now (the fleet runner).
        "queued_reason": row.queued_reason,
    }


def _check_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or len(metadata) > METADATA_MAX_PAIRS:
        raise InvalidRequest(
            f"metadata: an object of at most {METADATA_MAX_PAIRS} string pairs",
            code="invalid_value",
            param="metadata",
        )
    for key, value in metadata.items():
        if len(key) > METADATA_KEY_MAX or not isinstance(value, str):
            raise InvalidRequest(
                f"metadata: keys of at most {METADATA_KEY_MAX} characters, string values",
                code="invalid_value",
                param="metadata",
            )
        if len(value) > METADATA_VALUE_MAX:
            raise InvalidRequest(
                f"metadata.{key}: at most {METADATA_VALUE_MAX} characters",
                code="invalid_value",
                param="metadata",
            )
    return dict(metadata)


def create_batch(
    *,
    db: Database,
    clock: Clock,
    principal: Principal,
    input_file_id: Any,
    endpoint: Any,
    completion_window: Any,
    metadata: Any = None,
) -> StudioBatchRow:
    """A batch of the org's ``batch`` file, ``validating`` until a worker takes it."""
    if not isinstance(input_file_id, str) or not input_file_id:
        raise InvalidRequest(
            "input_file_id is required", code="missing_required_parameter", param="input_file_id"
        )
    if endpoint not in ENDPOINTS:
        raise InvalidRequest(
            f"endpoint: {endpoint!r} is not supported; use one of {', '.join(ENDPOINTS)}",
            code="invalid_value",
            param="endpoint",
        )
    if completion_window not in COMPLETION_WINDOWS:
        raise InvalidRequest(
            f"completion_window: {completion_window!r} is not supported; use '24h'",
            code="invalid_value",
            param="completion_window",
        )
    meta = _check_metadata(metadata)
    file = find_org_file(db=db, org_id=principal.org_id, file_id=input_file_id)
    if file is None:  # another org's file is as absent as one that never was
        raise NotFound(
            f"No such File object: {input_file_id}", code="file_not_found", param="input_file_id"
        )
    if file.purpose != Purpose.BATCH:
        raise InvalidRequest(
            f"input_file_id: the file's purpose is {file.purpose!r}; a batch reads a file "
            "uploaded with purpose 'batch'",
            code="invalid_file_purpose",
            param="input_file_id",
        )
    now = clock.now()
    row = StudioBatchRow(
        id=random_id("batch"),
        org_id=principal.org_id,
        key_id=principal.key_id or "",
        endpoint=endpoint,
        input_file_id=input_file_id,
        completion_window=completion_window,
        status=BatchStatus.VALIDATING,
        batch_metadata=meta,
        errors=None,
        request_total=0,
        request_completed=0,
        request_failed=0,
        next_index=0,
        created_at=now,
        expires_at=now + COMPLETION_WINDOWS[completion_window],
    )
    with db.transaction() as s:
        s.add(row)
        s.flush()
        s.expunge(row)
    return row


def _visible(s: Session, principal: Principal, batch_id: str) -> StudioBatchRow:
    row = s.get(StudioBatchRow, batch_id)
    if row is None or not (principal.is_operator or row.org_id == principal.org_id):
        raise NotFound(
            f"No such Batch object: {batch_id}", code="batch_not_found", param="batch_id"
        )
    return row


def get_batch(*, db: Database, principal: Principal, batch_id: str) -> StudioBatchRow:
    with db.transaction() as s:
        row = _visible(s, principal, batch_id)
        s.expunge(row)
        return row


def list_batches(
    *, db: Database, principal: Principal, after: str | None, limit: int
) -> tuple[list[StudioBatchRow], bool]:
    """The org's batches, newest first, the page starting after batch ``after``."""
    with db.transaction() as s:
        q = sa.select(StudioBatchRow).where(StudioBatchRow.org_id == principal.org_id)
        if after is not None:
            cursor = s.get(StudioBatchRow, after)
            if cursor is None or cursor.org_id != principal.org_id:
                raise InvalidRequest(
                    f"no batch {after!r} to list after", code="invalid_cursor", param="after"
                )
            at, col = cursor.created_at, StudioBatchRow.created_at
            q = q.where(sa.or_(col < at, sa.and_(col == at, StudioBatchRow.id < after)))
        q = q.order_by(StudioBatchRow.created_at.desc(), StudioBatchRow.id.desc()).limit(limit + 1)
        rows = list(s.scalars(q))
        for row in rows:
            s.expunge(row)
    return rows[:limit], len(rows) > limit


def cancel_batch(
    *, db: Database, clock: Clock, principal: Principal, batch_id: str
) -> StudioBatchRow:
    """``cancelling`` (a worker writes what finished and ends it ``cancelled``), or at once
    ``cancelled`` while validating. A batch already done is a 409; cancelling twice is fine."""
    with db.transaction() as s:
        row = _visible(s, principal, batch_id)
        if row.org_id != principal.org_id and not principal.is_operator_admin:
            raise PermissionDenied(  # operator staff: they see every org's batches, change none
                "only an operator admin may cancel another organization's batch",
                code="operator_admin_only",
            )
        status = BatchStatus(row.status)
        if status is not BatchStatus.CANCELLING:
            target = after_cancel(status)
            if target is None:
                raise Conflict(
                    f"Cannot cancel a batch with status '{status}'",
                    code="batch_not_cancellable",
                    param="batch_id",
                )
            now = clock.now()
            row.cancelling_at = now
            row.status = target
            if target is BatchStatus.CANCELLED:
                row.cancelled_at = now
        s.flush()
        s.expunge(row)
        return row


# -- the worker's side ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lease:
    batch_id: str
    token: str


class LeaseLost(Exception):
    """The batch's lease is another worker's now (this one lapsed): stop, write nothing."""


def claim_batch(*, db: Database, clock: Clock, ttl_s: float) -> tuple[Lease, StudioBatchRow] | None:
    """The oldest batch not done whose lease is free or lapsed, leased to the caller."""
    now = clock.now()
    with db.transaction() as s:
        q = (
            sa.select(StudioBatchRow)
            .where(
                StudioBatchRow.status.in_(WORKABLE),
                sa.or_(
                    StudioBatchRow.lease_expires_at.is_(None),
                    StudioBatchRow.lease_expires_at < now,
                ),
            )
            .order_by(StudioBatchRow.created_at, StudioBatchRow.id)
            .limit(1)
        )
        if db.dialect == "postgresql":
            q = q.with_for_update(skip_locked=True)
        row = s.scalars(q).first()
        if row is None:
            return None
        token = secrets.token_hex(16)
        taken = s.execute(  # type: ignore[attr-defined]
            sa.update(StudioBatchRow)
            .where(
                StudioBatchRow.id == row.id,
                sa.or_(
                    StudioBatchRow.lease_expires_at.is_(None),
                    StudioBatchRow.lease_expires_at < now,
                ),
            )
            .values(lease_token=token, lease_expires_at=now + timedelta(seconds=ttl_s))
        ).rowcount
        if taken != 1:
            return None
        s.refresh(row)
        s.expunge(row)
        return Lease(row.id, token), row


def _held(s: Session, lease: Lease) -> StudioBatchRow:
    row = s.get(StudioBatchRow, lease.batch_id, with_for_update=True)
    if row is None or row.lease_token != lease.token:
        raise LeaseLost(lease.batch_id)
    return row


def renew(*, db: Database, clock: Clock, lease: Lease, ttl_s: float) -> StudioBatchRow:
    """Extend the lease; answers the batch as it is now (a cancel shows here)."""
    with db.transaction() as s:
        row = _held(s, lease)
        row.lease_expires_at = clock.now() + timedelta(seconds=ttl_s)
        s.flush()
        s.expunge(row)
        return row


def wait(*, db: Database, clock: Clock, lease: Lease, reason: str, retry_s: float) -> None:
    """No capacity for the batch now (``reason``: none free, no quota, preempted): it stays as
    it is (``in_progress``) with ``queued_reason``, and is claimed again after ``retry_s``."""
    with db.transaction() as s:
        row = _held(s, lease)
        row.queued_reason = reason[:500]
        row.lease_token = None
        row.lease_expires_at = clock.now() + timedelta(seconds=retry_s)


def release(*, db: Database, lease: Lease) -> None:
    with db.transaction() as s:
        s.execute(
            sa.update(StudioBatchRow)
            .where(StudioBatchRow.id == lease.batch_id, StudioBatchRow.lease_token == lease.token)
            .values(lease_token=None, lease_expires_at=None)
        )


def start(*, db: Database, clock: Clock, lease: Lease, total: int) -> StudioBatchRow:
    """Validated: ``in_progress`` with ``total`` requests (unless cancelled meanwhile)."""
    with db.transaction() as s:
        row = _held(s, lease)
        row.request_total = total
        if row.status == BatchStatus.VALIDATING:
            row.status = BatchStatus.IN_PROGRESS
            row.in_progress_at = clock.now()
        s.flush()
        s.expunge(row)
        return row


def fail(*, db: Database, clock: Clock, lease: Lease, errors: list[dict[str, Any]]) -> None:
    """The input did not validate: ``failed`` with the errors (line numbers 1-based)."""
    with db.transaction() as s:
        row = _held(s, lease)
        row.status = BatchStatus.FAILED
        row.failed_at = clock.now()
        row.errors = errors
        row.lease_token, row.lease_expires_at = None, None


@dataclass(frozen=True, slots=True)
class Result:
    index: int
    ok: bool
    line: dict[str, Any]


def record_results(*, db: Database, lease: Lease, results: list[Result], next_index: int) -> None:
    """Finished requests and the index to resume from, in one transaction."""
    with db.transaction() as s:
        row = _held(s, lease)
        if next_index <= row.next_index:
            return  # already recorded (a replay): nothing counts twice
        for r in results:
            s.add(
                StudioBatchResultRow(
                    batch_id=row.id,
                    index=r.index,
                    ok=r.ok,
                    line=json.dumps(r.line, separators=(",", ":")),
                )
            )
        row.queued_reason = None  # it runs
        row.request_completed += sum(1 for r in results if r.ok)
        row.request_failed += sum(1 for r in results if not r.ok)
        row.next_index = next_index


def to_status(*, db: Database, clock: Clock, lease: Lease, status: BatchStatus) -> StudioBatchRow:
    """Move a leased batch to ``finalizing`` (or ``cancelling``), stamping the time."""
    with db.transaction() as s:
        row = _held(s, lease)
        if row.status != status:
            row.status = status
            setattr(row, f"{status.value}_at", clock.now())
        s.flush()
        s.expunge(row)
        return row


def results(*, db: Database, batch_id: str) -> list[tuple[int, bool, str]]:
    with db.transaction() as s:
        rows = s.execute(
            sa.select(
                StudioBatchResultRow.index, StudioBatchResultRow.ok, StudioBatchResultRow.line
            )
            .where(StudioBatchResultRow.batch_id == batch_id)
            .order_by(StudioBatchResultRow.index)
        ).all()
    return [(i, ok, line) for i, ok, line in rows]


def finish(
    *,
    db: Database,
    clock: Clock,
    lease: Lease,
    status: BatchStatus,
    output_file_id: str | None,
    error_file_id: str | None,
    failed_extra: int,
) -> None:
    """The end: ``completed``, ``expired`` or ``cancelled`` with the files; its request rows
    go (their lines are in the files now)."""
    assert status in DONE
    with db.transaction() as s:
        row = _held(s, lease)
        row.status = status
        setattr(row, f"{status.value}_at", clock.now())
        row.output_file_id, row.error_file_id = output_file_id, error_file_id
        row.request_failed += failed_extra
        row.lease_token, row.lease_expires_at = None, None
        s.execute(sa.delete(StudioBatchResultRow).where(StudioBatchResultRow.batch_id == row.id))
