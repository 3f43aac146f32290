"""Reservations (capacity blocks) once bought: scheduled → active → expired, or cancelled
before they start; extend while scheduled or active. Quoting and buying are ``offerings``.

A reservation holds whole nodes for ``[start, end)``: one firm allocation per node. Instances
launched into it take GPUs of those nodes (class ``reserved``, outside quota); until it starts,
its nodes serve spot (placement ends spot there at the reservation's start).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.compute.claims import check_free
from neocloud.compute.config import ComputeConfig
from neocloud.compute.domain import Reason, ReservationState
from neocloud.compute.lifecycle import move_reservation, record_event, request_stop
from neocloud.compute.offerings import MAX_OPERATOR_HOURS, MAX_TENANT_HOURS, end_spot_before
from neocloud.compute.tables import (
    AllocationRow,
    GpuClaimRow,
    InstanceRow,
    ReservationRow,
)
from neocloud.db.engine import Database
from neocloud.db.pagination import Page, paginate
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import Conflict, NotFound, ValidationFailed


def _visible(s: Session, actor: Principal, reservation_id: str) -> ReservationRow:
    row = s.get(ReservationRow, reservation_id)
    if row is None or not (actor.is_operator or row.org_id == actor.org_id):
        raise NotFound(
            f"no reservation {reservation_id}",
            code="reservation_not_found",
            param="reservation_id",
        )
    return row


def get_reservation(*, db: Database, actor: Principal, reservation_id: str) -> ReservationRow:
    with db.transaction() as s:
        return _visible(s, actor, reservation_id)


def list_reservations(
    *, db: Database, actor: Principal, limit: int, after: str | None
) -> Page[ReservationRow]:
    stmt = sa.select(ReservationRow)
    if not actor.is_operator:
        stmt = stmt.where(ReservationRow.org_id == actor.org_id)
    with db.transaction() as s:
        return paginate(s, stmt, ReservationRow.id, limit=limit, after=after)


def _set_end(s: Session, rsv: ReservationRow, end: datetime) -> None:
    ids = list(s.scalars(sa.select(AllocationRow.id).where(AllocationRow.reservation_id == rsv.id)))
    s.execute(
        sa.update(AllocationRow)
        .where(AllocationRow.reservation_id == rsv.id, AllocationRow.instance_id.is_(None))
        .values(end_at=end)
        .execution_options(synchronize_session=False)
    )
    s.execute(
        sa.update(GpuClaimRow)
        .where(GpuClaimRow.allocation_id.in_(ids), GpuClaimRow.firm.is_(True))
        .values(end_at=end)
        .execution_options(synchronize_session=False)
    )
    # Instances inside that were to stop at the old end now stop at the new one.
    old_end = rsv.end_at
    inside = list(
        s.scalars(
            sa.select(AllocationRow.id).where(
                AllocationRow.reservation_id == rsv.id,
                AllocationRow.instance_id.is_not(None),
                AllocationRow.end_at == old_end,
            )
        )
    )
    if inside and end > old_end:
        s.execute(
            sa.update(AllocationRow)
            .where(AllocationRow.id.in_(inside))
            .values(end_at=end)
            .execution_options(synchronize_session=False)
        )
        s.execute(
            sa.update(GpuClaimRow)
            .where(GpuClaimRow.allocation_id.in_(inside))
            .values(end_at=end)
            .execution_options(synchronize_session=False)
        )
        s.execute(
            sa.update(InstanceRow)
            .where(
                InstanceRow.reservation_id == rsv.id,
                InstanceRow.stop_reason == Reason.RESERVATION_ENDED.value,
                InstanceRow.stop_at == old_end,
            )
            .values(stop_at=end)
            .execution_options(synchronize_session=False)
        )
    rsv.end_at = end


def cancel(
    *,
    db: Database,
    clock: Clock,
    actor: Principal,
    reservation_id: str,
    config: ComputeConfig | None = None,
) -> ReservationRow:
    """Cancel before the start (after it, a reservation runs to its end), as the policy in
    ``config`` allows: until ``cancel_cutoff_s`` before the start, or never (None)."""
    now = clock.now()
    cutoff = (config or ComputeConfig()).cancel_cutoff_s
    with db.transaction() as s:
        row = _visible(s, actor, reservation_id)
        actor.require_org_role(row.org_id, Role.ADMIN)
        if row.state == ReservationState.CANCELLED.value:
            return row
        if row.state != ReservationState.SCHEDULED.value:
            raise Conflict(
                f"a reservation that is {row.state} cannot be cancelled; it runs to its end",
                code="not_cancellable",
            )
        if cutoff is None:
            raise Conflict(
                "reservations cannot be cancelled once bought (operator policy)",
                code="not_cancellable",
            )
        closes = row.start_at - timedelta(seconds=cutoff)
        if now >= closes:
            raise Conflict(
                f"cancellation closed at {closes.isoformat()}, {cutoff / 3600:g} h before the "
                "start (operator policy)",
                code="cancellation_closed",
                details={"closed_at": closes.isoformat()},
            )
        move_reservation(s, row, ReservationState.CANCELLED, now, reason=Reason.USER.value)
        _set_end(s, row, row.start_at)  # an empty interval: the nodes are free again
    return row


def extend(
    *,
    db: Database,
    clock: Clock,
    actor: Principal,
    reservation_id: str,
    hours: int,
) -> ReservationRow:
    """Push the end out by ``hours`` if the same nodes are free that long (else 409); the
    extra hours cost what the reservation's hours were sold at (it keeps its price)."""
    now = clock.now()
    if hours < 1:
        raise ValidationFailed("hours must be at least 1", param="hours")
    with db.transaction() as s:
        row = _visible(s, actor, reservation_id)
        actor.require_org_role(row.org_id, Role.MEMBER)
        if row.state not in (ReservationState.SCHEDULED.value, ReservationState.ACTIVE.value):
            raise Conflict(
                f"a reservation that is {row.state} cannot be extended", code="not_extendable"
            )
        total = (row.end_at - row.start_at).total_seconds() / 3600 + hours
        most = MAX_OPERATOR_HOURS if actor.is_operator_admin else MAX_TENANT_HOURS
        if total > most:
            raise ValidationFailed(
                f"the reservation would last {total:.0f} h; at most {most}",
                code="duration_out_of_range",
                param="hours",
            )
        new_end = row.end_at + timedelta(hours=hours)
        for node_id in row.node_ids:
            node = s.get(NodeRow, node_id)
            indices = list(range(node.gpu_count if node else 0))
            try:
                check_free(s, node_id, indices, row.end_at, new_end, firm=True)
            except Conflict as exc:
                raise Conflict(
                    f"node {node_id} is booked after the reservation ends",
                    code="extension_unavailable",
                    param="hours",
                ) from exc
            end_spot_before(s, node_id, row.end_at, now)
        sold_s = Decimal(int((row.end_at - row.start_at).total_seconds()))
        row.price_amount = row.price_amount + row.price_amount * (hours * 3600) / sold_s
        _set_end(s, row, new_end)
        record_event(
            s,
            subject_id=row.id,
            org_id=row.org_id,
            now=now,
            kind="extended",
            message=f"ends at {new_end.isoformat()}",
        )
    return row


def reconcile_reservations(*, db: Database, clock: Clock, config: ComputeConfig) -> int:
    """Start due reservations, warn and stop instances inside ending ones, expire ended ones."""
    now = clock.now()
    notice = timedelta(seconds=config.preemption_notice_s)
    changed = 0
    with db.transaction() as s:
        due = s.scalars(
            sa.select(ReservationRow).where(
                sa.or_(
                    sa.and_(
                        ReservationRow.state == ReservationState.SCHEDULED.value,
                        ReservationRow.start_at <= now,
                    ),
                    sa.and_(
                        ReservationRow.state == ReservationState.ACTIVE.value,
                        ReservationRow.end_at <= now + notice,
                    ),
                )
            )
        )
        for rsv in due:
            if rsv.state == ReservationState.SCHEDULED.value:
                move_reservation(s, rsv, ReservationState.ACTIVE, now)
                changed += 1
                continue
            inside = s.scalars(
                sa.select(InstanceRow).where(
                    InstanceRow.reservation_id == rsv.id,
                    InstanceRow.state.in_(["pending", "provisioning", "running"]),
                    InstanceRow.stop_at.is_(None),
                )
            )
            for inst in inside:
                request_stop(s, inst, now, reason=Reason.RESERVATION_ENDED, at=rsv.end_at)
                changed += 1
            if rsv.end_at <= now:
                move_reservation(
                    s, rsv, ReservationState.EXPIRED, now, reason=Reason.RESERVATION_ENDED.value
                )
                changed += 1
    return changed
