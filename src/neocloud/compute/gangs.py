"""Scheduling clusters: a gang placed in one decision and written in one transaction, and
replacement of members lost to failed nodes from the lowest common domain."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.compute.claims import check_free, preempt
from neocloud.compute.config import ComputeConfig, ScheduleReport
from neocloud.compute.domain import ClusterState, InstanceState, Reason
from neocloud.compute.lifecycle import move_cluster, move_instance, record_event, write_queued
from neocloud.compute.nodes import lock_node
from neocloud.compute.queue import WaitingQueue, expired, never_fits, waits
from neocloud.compute.snapshot import Snapshot, from_ts, node_eligible, ts
from neocloud.compute.tables import AllocationRow, ClusterRow, GpuClaimRow, InstanceRow
from neocloud.db.engine import Database
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import Conflict, NeocloudError
from neocloud.kernel.ids import new_id
from neocloud.placement import (
    Booking,
    BookingClass,
    GangRequest,
    NoCapacity,
    Placement,
    PlacementEngine,
)

LIVE = [
    InstanceState.PENDING.value,
    InstanceState.PROVISIONING.value,
    InstanceState.RUNNING.value,
    InstanceState.STOPPING.value,
]
# A cluster still gets substitutes for lost members in these states (not once it stops).
REPLACEABLE = frozenset(
    {ClusterState.PROVISIONING.value, ClusterState.RUNNING.value, ClusterState.DEGRADED.value}
)


def gang_request(c: ClusterRow) -> GangRequest:
    topo = c.topology or {}
    return GangRequest(
        gpu_model=c.gpu_model,
        node_count=c.node_count,
        id=c.id,
        required_level=str(topo.get("required") or "fabric"),
        preferred_level=topo.get("preferred"),
        segment=topo.get("segment"),
        segment_level=str(topo.get("segment_level") or "block"),
        fabric=c.fabric,
        cls=BookingClass(c.cls),
        owner=c.org_id,
    )


def clusters_to_schedule(s: Session) -> list[ClusterRow]:
    """Pending clusters, and degraded ones short of members (to replace)."""
    pending = list(
        s.scalars(sa.select(ClusterRow).where(ClusterRow.state == ClusterState.PENDING.value))
    )
    degraded = list(
        s.scalars(sa.select(ClusterRow).where(ClusterRow.state == ClusterState.DEGRADED.value))
    )
    return pending + degraded


def live_gang_requests(s: Session) -> dict[str, GangRequest]:
    rows = s.scalars(
        sa.select(ClusterRow).where(
            ClusterRow.state.in_(
                [
                    ClusterState.PROVISIONING.value,
                    ClusterState.RUNNING.value,
                    ClusterState.DEGRADED.value,
                ]
            )
        )
    )
    return {c.id: gang_request(c) for c in rows}


def _fail(db: Database, clock: Clock, cluster_id: str, no: NoCapacity) -> None:
    now = clock.now()
    message = no.reason
    if no.earliest_start is not None:
        message += f"; earliest start placement can see: {from_ts(no.earliest_start).isoformat()}"
    with db.transaction() as s:
        c = s.get(ClusterRow, cluster_id, with_for_update=True)
        if c is None or c.state != ClusterState.PENDING.value:
            return
        move_cluster(
            s, c, ClusterState.FAILED, now, reason=Reason.NO_CAPACITY.value, message=message
        )
        for m in s.scalars(sa.select(InstanceRow).where(InstanceRow.cluster_id == c.id)):
            if m.state == InstanceState.PENDING.value:
                move_instance(s, m, InstanceState.FAILED, now, reason=Reason.NO_CAPACITY.value)


def place_cluster(
    db: Database,
    clock: Clock,
    snap: Snapshot,
    engine: PlacementEngine,
    cluster: ClusterRow,
    config: ComputeConfig,
    report: ScheduleReport,
    queue: WaitingQueue,
) -> None:
    now = clock.now()
    request = gang_request(cluster)
    try:
        result = engine.place(request, now=ts(now), allow_preemption=not request.cls.preemptible)
    except NeocloudError as exc:
        result = NoCapacity(exc.message, code=exc.code)
    if isinstance(result, NoCapacity):
        never = never_fits(engine, request)
        if never is None and waits(cluster.queue_until, now):
            queue.hold(request)
            if cluster.state_message is None:
                _write_queued(db, cluster.id, result, now)
            report.held.append(cluster.id)
            return
        result = NoCapacity(never) if never else expired(cluster.queue_until, result)
        result = queue.note(result, cluster.gpu_model)
        _fail(db, clock, cluster.id, result)
        report.failed.append(cluster.id)
        return
    try:
        stopped = _commit_gang(db, clock, snap, cluster.id, result, config)
    except Conflict:
        engine.release(result.allocation_id, now=ts(now))
        report.retried.append(cluster.id)
        return
    report.placed.append(cluster.id)
    report.preempted.extend(stopped)


def _write_queued(db: Database, cluster_id: str, no: NoCapacity, now: datetime) -> None:
    with db.transaction() as s:
        c = s.get(ClusterRow, cluster_id, with_for_update=True)
        if c is not None and c.state == ClusterState.PENDING.value:
            write_queued(s, c, no, now)


def _attach(
    s: Session,
    snap: Snapshot,
    member: InstanceRow,
    booking: Booking,
    cluster: ClusterRow,
    start: datetime,
    now: datetime,
) -> None:
    """Bind one member to one whole node: allocation, claims, provisioning."""
    node = snap.nodes[booking.node_id]
    locked = lock_node(s, node.id)
    if locked is None or not node_eligible(locked):
        raise Conflict("the node no longer takes work", code="node_unavailable")
    indices = list(range(node.gpu_count))
    end = None if booking.end is None else from_ts(booking.end)
    firm = not booking.cls.preemptible
    check_free(s, node.id, indices, start, end, firm=firm)
    alloc = AllocationRow(
        id=new_id("alc"),
        org_id=cluster.org_id,
        project_id=cluster.project_id,
        instance_id=member.id,
        cluster_id=cluster.id,
        node_id=node.id,
        gpu_model=cluster.gpu_model,
        gpu_count=node.gpu_count,
        gpu_indices=indices,
        vcpus=booking.vcpus,
        ram_gib=booking.ram_gib,
        cls=booking.cls.value,
        start_at=start,
        end_at=end,
        created_at=now,
    )
    s.add(alloc)
    s.flush()
    for i in indices:
        s.add(
            GpuClaimRow(
                allocation_id=alloc.id,
                gpu_index=i,
                node_id=node.id,
                firm=firm,
                start_at=start,
                end_at=end,
            )
        )
    member.node_id, member.gpu_indices, member.allocation_id = node.id, indices, alloc.id
    member.gpu_count = node.gpu_count
    member.scheduled_at = now
    member.due_at = start
    move_instance(s, member, InstanceState.PROVISIONING, now)
    snap.add_span(node.id, alloc.id, start, end, indices)


def _commit_gang(
    db: Database,
    clock: Clock,
    snap: Snapshot,
    cluster_id: str,
    placed: Placement,
    config: ComputeConfig,
) -> list[str]:
    now = clock.now()
    victims = [v for v in placed.preempted if v.cls.preemptible]
    start = now + timedelta(seconds=config.preemption_notice_s) if victims else now
    victim_rows = [a for a in snap.allocations if a.id in {v.id for v in victims}]
    stopped: list[str] = []
    with db.transaction() as s:
        cluster = s.get(ClusterRow, cluster_id, with_for_update=True)
        if cluster is None or cluster.state != ClusterState.PENDING.value:
            raise Conflict("the cluster is no longer pending", code="not_pending")
        members = list(
            s.scalars(
                sa.select(InstanceRow)
                .where(
                    InstanceRow.cluster_id == cluster_id,
                    InstanceRow.state == InstanceState.PENDING.value,
                )
                .order_by(InstanceRow.id)
            )
        )
        if len(members) != len(placed.bookings):
            raise Conflict("the cluster's members changed", code="not_pending")
        for v in victim_rows:
            stopped.extend(preempt(s, v, now, start))
        for member, booking in zip(members, placed.bookings, strict=True):
            _attach(s, snap, member, booking, cluster, start, now)
        move_cluster(
            s,
            cluster,
            ClusterState.PROVISIONING,
            now,
            message=f"placed in {placed.domain}: {placed.domains_used}",
        )
    return stopped


def replace_members(
    db: Database,
    clock: Clock,
    snap: Snapshot,
    engine: PlacementEngine,
    cluster: ClusterRow,
    report: ScheduleReport,
) -> None:
    """Book a substitute for each member lost to a failed node, nearest domain first."""
    now = clock.now()
    with db.transaction() as s:
        members = list(
            s.scalars(
                sa.select(InstanceRow)
                .where(InstanceRow.cluster_id == cluster.id)
                .order_by(InstanceRow.id.desc())
            )
        )
    live = [m for m in members if m.state in LIVE]
    lost = [
        m
        for m in members
        if m.state in (InstanceState.FAILED.value, InstanceState.TERMINATED.value)
        and m.state_reason in (Reason.NODE_FAILED.value, Reason.MAINTENANCE.value)
    ]
    need = cluster.node_count - len(live)
    for member in lost[:need]:
        _replace_one(db, clock, snap, engine, cluster, member, report, now)


def _replace_one(
    db: Database,
    clock: Clock,
    snap: Snapshot,
    engine: PlacementEngine,
    cluster: ClusterRow,
    lost: InstanceRow,
    report: ScheduleReport,
    now: datetime,
) -> None:
    failed_node = lost.node_id
    if failed_node is None or failed_node not in engine.nodes:
        return
    # The lost member's booking is over in the database; placement needs it to look near it.
    ghost = Booking(
        f"lost-{lost.id}",
        failed_node,
        ts(lost.scheduled_at or now),
        None,
        BookingClass(cluster.cls),
        cluster.org_id,
        0,
        lost.gpu_count,
        0,
        0,
        cluster.id,
    )
    try:
        engine.add_booking(ghost, request=gang_request(cluster))
        result = engine.replace(cluster.id, failed_node, now=ts(now))
    except NeocloudError:
        return
    if isinstance(result, NoCapacity):
        engine.release(cluster.id, now=ts(now), node_ids=[failed_node])
        with db.transaction() as s:
            record_event(
                s,
                subject_id=cluster.id,
                org_id=cluster.org_id,
                now=now,
                kind="replacement_waiting",
                reason=Reason.NODE_FAILED.value,
                message=result.reason,
                node_id=failed_node,
            )
        return
    try:
        with db.transaction() as s:
            c = s.get(ClusterRow, cluster.id, with_for_update=True)
            if c is None or c.state not in REPLACEABLE:
                raise Conflict("the cluster is stopping or ended", code="not_live")
            member = InstanceRow(
                id=new_id("inst", at=now),
                org_id=c.org_id,
                project_id=c.project_id,
                cluster_id=c.id,
                name=f"{lost.name}-r",
                instance_type=lost.instance_type,
                gpu_model=lost.gpu_model,
                gpu_count=lost.gpu_count,
                vcpus=lost.vcpus,
                ram_gib=lost.ram_gib,
                cls=lost.cls,
                reservation_policy=lost.reservation_policy,
                reservation_ids=[],
                ssh_keys=list(lost.ssh_keys or []),
                ssh_key_ids=list(lost.ssh_key_ids or []),
                image=lost.image,
                login_user=lost.login_user,
                user_data=c.user_data,
                state=InstanceState.PENDING.value,
                gpu_indices=[],
                created_by=lost.created_by,
                created_at=now,
                updated_at=now,
            )
            s.add(member)
            s.flush()
            _attach(s, snap, member, result.booking, c, now, now)
            record_event(
                s,
                subject_id=c.id,
                org_id=c.org_id,
                now=now,
                kind="replacement",
                reason=Reason.NODE_FAILED.value,
                message=(
                    f"node {failed_node} replaced by {result.booking.node_id} "
                    f"in {result.level} {result.domain}"
                ),
                node_id=result.booking.node_id,
            )
    except Conflict:
        report.retried.append(cluster.id)
        return
    report.placed.append(cluster.id)
