"""Launching instances into a reservation: which reservations an instance may use now, and
free GPUs of their nodes (class ``reserved``, outside quota; the instance stops at the end)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.compute.domain import InstanceState, Reason, ReservationState
from neocloud.compute.lifecycle import move_instance, request_stop
from neocloud.compute.snapshot import whole_only
from neocloud.compute.tables import AllocationRow, GpuClaimRow, InstanceRow, ReservationRow
from neocloud.db.engine import Database
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.clock import Clock
from neocloud.kernel.ids import new_id


def usable_reservations(
    s: Session, row: InstanceRow, now: datetime
) -> tuple[list[ReservationRow], str | None]:
    """Reservations the instance may use now, and why none if there are none."""
    stmt = sa.select(ReservationRow).where(
        ReservationRow.org_id == row.org_id, ReservationRow.gpu_model == row.gpu_model
    )
    if row.reservation_ids:
        stmt = stmt.where(ReservationRow.id.in_(row.reservation_ids))
    rows = list(s.scalars(stmt.order_by(ReservationRow.start_at)))
    active = [
        r for r in rows if r.state == ReservationState.ACTIVE.value and r.start_at <= now < r.end_at
    ]
    if active:
        return active, None
    later = [r for r in rows if r.state == ReservationState.SCHEDULED.value]
    if later:
        return [], f"reservation {later[0].id} starts at {later[0].start_at.isoformat()}"
    return [], "no active reservation of the organization matches"


def place_in_reservation(db: Database, clock: Clock, instance_id: str) -> str | None:
    """Put a pending instance on free GPUs of one of its usable reservations; returns None
    when placed, else why not."""
    now = clock.now()
    with db.transaction() as s:
        row = s.get(InstanceRow, instance_id, with_for_update=True)
        if row is None or row.state != InstanceState.PENDING.value:
            return None
        usable, why = usable_reservations(s, row, now)
        for rsv in usable:
            s.get(ReservationRow, rsv.id, with_for_update=True)  # one placer per reservation
            for node_id in rsv.node_ids:
                node = s.get(NodeRow, node_id)
                if node is None or node.state == "failed":
                    continue
                if whole_only(node) and row.gpu_count != node.gpu_count:
                    continue  # bare metal is never shared: whole-node instances only
                used: set[int] = set()
                for (indices,) in s.execute(
                    sa.select(AllocationRow.gpu_indices).where(
                        AllocationRow.reservation_id == rsv.id,
                        AllocationRow.node_id == node_id,
                        AllocationRow.instance_id.is_not(None),
                        sa.or_(AllocationRow.end_at.is_(None), AllocationRow.end_at > now),
                    )
                ):
                    used.update(indices)
                free = [i for i in range(node.gpu_count) if i not in used]
                if len(free) < row.gpu_count:
                    continue
                indices = free[: row.gpu_count]
                alloc = AllocationRow(
                    id=new_id("alc", at=now),
                    org_id=row.org_id,
                    project_id=row.project_id,
                    instance_id=row.id,
                    reservation_id=rsv.id,
                    node_id=node_id,
                    gpu_model=row.gpu_model,
                    gpu_count=row.gpu_count,
                    gpu_indices=indices,
                    vcpus=row.vcpus,
                    ram_gib=row.ram_gib,
                    cls="reserved",
                    start_at=now,
                    end_at=rsv.end_at,
                    created_at=now,
                )
                s.add(alloc)
                s.flush()
                for i in indices:  # the reservation's own firm claims guard these GPUs
                    s.add(
                        GpuClaimRow(
                            allocation_id=alloc.id,
                            gpu_index=i,
                            node_id=node_id,
                            firm=False,
                            start_at=now,
                            end_at=rsv.end_at,
                        )
                    )
                row.cls = "reserved"
                row.reservation_id = rsv.id
                row.node_id, row.gpu_indices, row.allocation_id = node_id, indices, alloc.id
                row.scheduled_at, row.due_at = now, now
                move_instance(s, row, InstanceState.PROVISIONING, now)
                request_stop(s, row, now, reason=Reason.RESERVATION_ENDED, at=rsv.end_at)
                return None
        return why or "the reservation has no free GPUs left"
