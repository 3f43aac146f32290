"""Writing GPU claims' neighbours: the overlap check every backend runs before inserting
claims, and preemption notices (a spot allocation, or a spot cluster as a whole, ends at the
notice's end and its instances are told)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.compute.domain import Reason
from neocloud.compute.lifecycle import record_event, request_stop, stop_members
from neocloud.compute.tables import AllocationRow, ClusterRow, GpuClaimRow, InstanceRow
from neocloud.kernel.errors import Conflict


def preempt(s: Session, victim: AllocationRow, now: datetime, at: datetime) -> list[str]:
    """End a spot allocation at ``at`` and give its instance notice."""
    alloc = s.get(AllocationRow, victim.id)
    if alloc is None:
        return []
    if alloc.end_at is None or alloc.end_at > at:
        alloc.end_at = at
        s.execute(
            sa.update(GpuClaimRow).where(GpuClaimRow.allocation_id == alloc.id).values(end_at=at)
        )
    if alloc.cluster_id is not None:  # a gang goes as a whole
        return preempt_cluster(s, alloc.cluster_id, now, at)
    if alloc.instance_id is None:
        return []
    inst = s.get(InstanceRow, alloc.instance_id)
    if inst is None:
        return []
    request_stop(s, inst, now, reason=Reason.PREEMPTED, at=at)
    record_event(
        s,
        subject_id=inst.id,
        org_id=inst.org_id,
        now=now,
        kind="preemption_notice",
        reason=Reason.PREEMPTED.value,
        message=f"capacity is needed by a higher class; the instance stops at {at.isoformat()}",
        node_id=inst.node_id,
    )
    return [inst.id]


def check_free(
    s: Session,
    node_id: str,
    indices: list[int],
    start: datetime,
    end: datetime | None,
    *,
    firm: bool,
) -> None:
    """No claim on these GPUs overlaps ``[start, end)`` (a firm one: no firm claim; spot: none
    at all). SQLite's single writer makes this check-then-insert safe; PostgreSQL also has the
    exclusion constraint."""
    stmt = sa.select(GpuClaimRow.allocation_id).where(
        GpuClaimRow.node_id == node_id,
        GpuClaimRow.gpu_index.in_(indices),
        sa.or_(
            GpuClaimRow.end_at.is_(None),
            sa.and_(GpuClaimRow.end_at > start, GpuClaimRow.end_at > GpuClaimRow.start_at),
        ),
    )
    if end is not None:
        stmt = stmt.where(GpuClaimRow.start_at < end)
    if firm:
        stmt = stmt.where(GpuClaimRow.firm.is_(True))
    clash = s.scalars(stmt.limit(1)).first()
    if clash is not None:
        raise Conflict(
            f"GPUs {indices} of node {node_id} are claimed by allocation {clash}",
            code="gpus_taken",
        )


def preempt_cluster(s: Session, cluster_id: str, now: datetime, at: datetime) -> list[str]:
    cluster = s.get(ClusterRow, cluster_id, with_for_update=True)
    if cluster is None:
        return []
    s.execute(
        sa.update(AllocationRow)
        .where(
            AllocationRow.cluster_id == cluster_id,
            sa.or_(AllocationRow.end_at.is_(None), AllocationRow.end_at > at),
        )
        .values(end_at=at)
        .execution_options(synchronize_session=False)
    )
    ids = s.scalars(sa.select(AllocationRow.id).where(AllocationRow.cluster_id == cluster_id))
    s.execute(
        sa.update(GpuClaimRow)
        .where(
            GpuClaimRow.allocation_id.in_(list(ids)),
            sa.or_(GpuClaimRow.end_at.is_(None), GpuClaimRow.end_at > at),
        )
        .values(end_at=at)
        .execution_options(synchronize_session=False)
    )
    stop_members(s, cluster, now, reason=Reason.PREEMPTED, at=at)
    record_event(
        s,
        subject_id=cluster.id,
        org_id=cluster.org_id,
        now=now,
        kind="preemption_notice",
        reason=Reason.PREEMPTED.value,
        message=f"capacity is needed by a higher class; the cluster stops at {at.isoformat()}",
    )
    return [cluster.id]
