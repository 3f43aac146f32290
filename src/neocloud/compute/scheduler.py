"""The scheduler: pending requests → placement → allocations, one cycle at a time.

A cycle reads a snapshot (eligible nodes, live allocations), orders pending instances
reserved > on-demand > spot and FIFO within a class, and asks placement for each in turn. A
request that does not fit now fails with ``no_capacity``, unless it asked to wait: then it
stays pending, and the first such request of a GPU model holds a shadow on the capacity it
waits for, so that later requests backfill around it without delaying it (``compute.queue``).
Each placement is written in
one transaction that re-checks the node and, on every backend, that no firm claim overlaps the
GPUs taken; on PostgreSQL the exclusion constraint on ``gpu_claims`` refuses it regardless.

On-demand requests may preempt spot: the victims get a notice (``preemption_notice_s``) and
the new allocation starts when the notice ends.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.compute import gangs
from neocloud.compute.claims import check_free, preempt
from neocloud.compute.config import ComputeConfig, ScheduleReport
from neocloud.compute.domain import CapacityClass, ClusterState, InstanceState, Reason
from neocloud.compute.lifecycle import move_instance, request_stop, write_queued
from neocloud.compute.queue import WaitingQueue, expired, never_fits, waits
from neocloud.compute.reserved import place_in_reservation
from neocloud.compute.snapshot import Snapshot, from_ts, load_snapshot, node_eligible, ts
from neocloud.compute.tables import (
    AllocationRow,
    ClusterRow,
    GpuClaimRow,
    InstanceRow,
    ReservationRow,
)
from neocloud.db import bulk
from neocloud.db.engine import Database
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import Conflict, NeocloudError
from neocloud.kernel.ids import new_id
from neocloud.placement import (
    BookingClass,
    GangRequest,
    NoCapacity,
    Placement,
    PlacementEngine,
    SliceRequest,
)

log = logging.getLogger(__name__)
CLAIMS: sa.Table = GpuClaimRow.__table__  # type: ignore[assignment]


def _order(row: InstanceRow) -> tuple[int, datetime, str]:
    return (CapacityClass(row.cls).rank, row.created_at, row.id)


def build_engine(
    snap: Snapshot, config: ComputeConfig, requests: dict[str, GangRequest] | None = None
) -> PlacementEngine:
    """A placement engine on the snapshot; ``requests`` gives clusters' gang requests (by
    cluster id) so that a later ``replace`` knows their levels and segments."""
    engine = PlacementEngine(snap.node_snapshots(), levels=snap.levels, policy=config.policy)
    requests = requests or {}
    for b in snap.bookings():
        try:
            engine.add_booking(b, request=requests.get(b.allocation_id))
        except NeocloudError:  # an inconsistent row must not stop scheduling for everyone
            log.exception("allocation %s does not fit its node; left out of placement", b.id)
    return engine


def schedule(*, db: Database, clock: Clock, config: ComputeConfig) -> ScheduleReport:
    """One scheduling cycle: pending instances and clusters in class order, FIFO within a
    class; then replacements for degraded clusters."""
    report = ScheduleReport()
    now = clock.now()
    with db.transaction() as s:
        pending = list(
            s.scalars(
                sa.select(InstanceRow).where(
                    InstanceRow.state == InstanceState.PENDING.value,
                    InstanceRow.cluster_id.is_(None),
                )
            )
        )
        clusters = gangs.clusters_to_schedule(s)
        if not pending and not clusters:
            return report
        snap = load_snapshot(s, now)
        requests = gangs.live_gang_requests(s)
    engine = build_engine(snap, config, requests)
    queue = WaitingQueue(engine, ts(now))
    work: list[tuple[tuple[int, datetime, str], InstanceRow | ClusterRow]] = [
        (_order(r), r) for r in pending
    ]
    work += [((CapacityClass(c.cls).rank, c.created_at, c.id), c) for c in clusters]
    batch = Batch(db, report, now)
    for _, item in sorted(work, key=lambda w: w[0]):
        if isinstance(item, ClusterRow):
            batch.flush()  # gangs write on their own, after what was decided before them
            if item.state == ClusterState.PENDING.value:
                gangs.place_cluster(db, clock, snap, engine, item, config, report, queue)
            else:
                gangs.replace_members(db, clock, snap, engine, item, report)
        else:
            _place_instance(db, clock, snap, engine, item, config, batch, queue)
    batch.flush()
    return report


@dataclass
class Prefetch:
    """Rows a batch writes, locked and read in a few queries instead of a few per decision:
    the instances, their nodes, and the live GPU claims on those nodes."""

    instances: dict[str, InstanceRow]
    nodes: dict[str, NodeRow]
    claims: dict[str, list[tuple[int, datetime, datetime | None, bool, str]]]
    # GPU claims the batch adds, inserted together (one executemany, no ORM objects)
    new_claims: list[dict[str, object]] = field(default_factory=list)

    def write_claims(self, s: Session) -> None:
        if self.new_claims:
            s.flush()  # their allocations first (foreign key)
            bulk.insert_rows(s, CLAIMS, self.new_claims)
            self.new_claims = []

    def check_free(
        self, node_id: str, indices: list[int], start: datetime, end: datetime | None, firm: bool
    ) -> None:
        """Like ``claims.check_free``, on the prefetched claims (plus those this batch added)."""
        wanted = set(indices)
        for gpu, c_start, c_end, c_firm, alloc_id in self.claims.get(node_id, []):
            if gpu not in wanted or (firm and not c_firm):
                continue
            if c_end is not None and (c_end <= start or c_end <= c_start):
                continue
            if end is not None and c_start >= end:
                continue
            raise Conflict(
                f"GPUs {indices} of node {node_id} are claimed by allocation {alloc_id}",
                code="gpus_taken",
            )


def prefetch(s: Session, now: datetime, items: list[_Pending]) -> Prefetch:
    ids = sorted({it.instance_id for it in items})
    node_ids = sorted({it.node_id for it in items if it.node_id})
    instances = {
        r.id: r
        for r in s.scalars(
            sa.select(InstanceRow)
            .where(InstanceRow.id.in_(ids))
            .order_by(InstanceRow.id)
            .with_for_update()
        )
    }
    nodes = {
        n.id: n
        for n in s.scalars(
            sa.select(NodeRow)
            .where(NodeRow.id.in_(node_ids))
            .order_by(NodeRow.id)
            .with_for_update()
        )
    }
    claims: dict[str, list[tuple[int, datetime, datetime | None, bool, str]]] = defaultdict(list)
    if node_ids:
        for c in s.execute(
            sa.select(
                GpuClaimRow.node_id,
                GpuClaimRow.gpu_index,
                GpuClaimRow.start_at,
                GpuClaimRow.end_at,
                GpuClaimRow.firm,
                GpuClaimRow.allocation_id,
            ).where(
                GpuClaimRow.node_id.in_(node_ids),
                sa.or_(GpuClaimRow.end_at.is_(None), GpuClaimRow.end_at > now),
            )
        ):
            claims[c.node_id].append((c.gpu_index, c.start_at, c.end_at, c.firm, c.allocation_id))
    return Prefetch(instances, nodes, claims)


Write = Callable[[Session, Prefetch], list[str]]


@dataclass
class _Pending:
    instance_id: str
    node_id: str | None
    write: Write
    undo: Callable[[], None]
    placed: bool  # a placement (else a no-capacity failure)
    held: bool = False  # queued: it waits (placed is False)


class Batch:
    """Decisions of one cycle written in one transaction; if the database refuses it (a
    conflict), each is written alone so that one clash does not hold back the others."""

    def __init__(self, db: Database, report: ScheduleReport, now: datetime) -> None:
        self.db, self.report, self.now = db, report, now
        self.items: list[_Pending] = []
        # (org, GPU model) -> has an active reservation; read once per cycle
        self.reserved: dict[tuple[str, str], bool] = {}

    def add(self, item: _Pending) -> None:
        self.items.append(item)

    def flush(self) -> None:
        items, self.items = self.items, []
        if not items:
            return
        try:
            with self.db.transaction() as s, bulk.buffered(s):
                pre = prefetch(s, self.now, items)
                results = [it.write(s, pre) for it in items]
                pre.write_claims(s)
        except Conflict:
            results = []
            for it in items:
                try:
                    with self.db.transaction() as s, bulk.buffered(s):
                        pre = prefetch(s, self.now, [it])
                        results.append(it.write(s, pre))
                        pre.write_claims(s)
                except Conflict:
                    it.undo()
                    self.report.retried.append(it.instance_id)
                    results.append([])
                    it.placed = False
                    it.instance_id = ""
        for it, stopped in zip(items, results, strict=True):
            if not it.instance_id:
                continue
            if it.held:
                self.report.held.append(it.instance_id)
                continue
            (self.report.placed if it.placed else self.report.failed).append(it.instance_id)
            self.report.preempted.extend(stopped)


def _place_instance(
    db: Database,
    clock: Clock,
    snap: Snapshot,
    engine: PlacementEngine,
    row: InstanceRow,
    config: ComputeConfig,
    batch: Batch,
    queue: WaitingQueue,
) -> None:
    now = clock.now()
    report = batch.report
    if (
        row.cls != "spot"
        and row.reservation_policy != "forbid"
        and _has_reservations(db, row, batch)
    ):
        batch.flush()
        why = place_in_reservation(db, clock, row.id)
        if why is None:
            report.placed.append(row.id)
            return
        if row.cls == CapacityClass.RESERVED.value:  # strict, or named reservations
            if waits(row.queue_until, now):  # room in the reservation may free up
                _hold(batch, row, NoCapacity(why), now)
                return
            _fail_no_capacity(db, clock, row.id, expired(row.queue_until, NoCapacity(why)))
            report.failed.append(row.id)
            return
    elif row.cls == CapacityClass.RESERVED.value:
        _fail_no_capacity(db, clock, row.id, NoCapacity("no reservation of the org matches"))
        report.failed.append(row.id)
        return
    cls = BookingClass(row.cls)
    request = SliceRequest(
        id=row.id,
        gpus=row.gpu_count,
        vcpus=row.vcpus,
        ram_gib=row.ram_gib,
        gpu_model=row.gpu_model,
        cls=cls,
        owner=row.org_id,
    )
    cls_model = row.gpu_model
    try:
        result = engine.place(request, now=ts(now), allow_preemption=not cls.preemptible)
    except NeocloudError as exc:
        result = NoCapacity(exc.message, code=exc.code)
    if isinstance(result, NoCapacity):
        never = never_fits(engine, request)
        if never is None and waits(row.queue_until, now):
            queue.hold(request)
            _hold(batch, row, result, now)
            return
        no = NoCapacity(never) if never else expired(row.queue_until, result)
        no = queue.note(no, cls_model)
        batch.add(
            _Pending(
                row.id,
                None,
                lambda s, pre: _write_failure(s, pre.instances.get(row.id), no, now),
                lambda: None,
                False,
            )
        )
        return
    placed = result

    def undo() -> None:
        # Someone else took the GPUs (another scheduler, a stale snapshot): try next cycle.
        engine.release(placed.allocation_id, now=ts(now))

    try:
        write = _plan(snap, row.id, placed, config, now)
    except Conflict:
        undo()
        report.retried.append(row.id)
        return
    batch.add(_Pending(row.id, placed.bookings[0].node_id, write, undo, True))


def _hold(batch: Batch, row: InstanceRow, no: NoCapacity, now: datetime) -> None:
    """A queued instance waits; the first time, say so (message and a ``queued`` event)."""
    first = row.state_message is None

    def write(s: Session, pre: Prefetch) -> list[str]:
        locked = pre.instances.get(row.id)
        if first and locked is not None and locked.state == InstanceState.PENDING.value:
            write_queued(s, locked, no, now)
        return []

    batch.add(_Pending(row.id, None, write, lambda: None, False, held=True))


def _has_reservations(db: Database, row: InstanceRow, batch: Batch) -> bool:
    if row.reservation_ids or row.cls == CapacityClass.RESERVED.value:
        return True
    key = (row.org_id, row.gpu_model)
    if key in batch.reserved:
        return batch.reserved[key]
    with db.transaction() as s:
        found = s.scalar(
            sa.select(ReservationRow.id)
            .where(
                ReservationRow.org_id == row.org_id,
                ReservationRow.gpu_model == row.gpu_model,
                ReservationRow.state == "active",
            )
            .limit(1)
        )
    batch.reserved[key] = found is not None
    return found is not None


def _fail_no_capacity(db: Database, clock: Clock, instance_id: str, no: NoCapacity) -> None:
    with db.transaction() as s:
        row = s.get(InstanceRow, instance_id, with_for_update=True)
        _write_failure(s, row, no, clock.now())


def _write_failure(s: Session, row: InstanceRow | None, no: NoCapacity, now: datetime) -> list[str]:
    message = no.reason
    if no.earliest_start is not None:
        message += f"; earliest start placement can see: {from_ts(no.earliest_start).isoformat()}"
    if row is None or row.state != InstanceState.PENDING.value:
        return []
    move_instance(
        s, row, InstanceState.FAILED, now, reason=Reason.NO_CAPACITY.value, message=message
    )
    return []


def _free_indices(
    snap: Snapshot, node_id: str, gpu_count: int, start: datetime, end: datetime | None
) -> list[int]:
    used = snap.used(node_id, start, end)
    return [i for i in range(gpu_count) if i not in used]


def _plan(
    snap: Snapshot,
    instance_id: str,
    placed: Placement,
    config: ComputeConfig,
    now: datetime,
) -> Write:
    """Choose the GPU indices of one placement now; return the write (allocation, GPU claims,
    preemption notices) to run in a transaction."""
    booking = placed.bookings[0]
    node_id = booking.node_id
    victims = [v for v in placed.preempted if v.cls.preemptible]
    start = now + timedelta(seconds=config.preemption_notice_s) if victims else now
    victim_rows = {a.id: a for a in snap.allocations if a.id in {v.id for v in victims}}
    for v in victim_rows.values():
        snap.end_span(v.id, v.node_id, start)
    node = snap.nodes[node_id]
    end = None if booking.end is None else from_ts(booking.end)
    free = _free_indices(snap, node_id, node.gpu_count, start, end)
    if len(free) < booking.gpus:
        raise Conflict("the node's GPU indices are taken", code="gpus_taken")
    indices = free[: booking.gpus]
    alloc_id = new_id("alc", at=now)
    snap.add_span(node_id, alloc_id, start, end, indices)

    def write(s: Session, pre: Prefetch) -> list[str]:
        stopped: list[str] = []
        row = pre.instances.get(instance_id)
        if row is None or row.state != InstanceState.PENDING.value:
            raise Conflict("the instance is no longer pending", code="not_pending")
        locked = pre.nodes.get(node_id)
        if locked is None or not node_eligible(locked):
            raise Conflict("the node no longer takes work", code="node_unavailable")
        for v in victim_rows.values():
            stopped.extend(preempt(s, v, now, start))
        firm = not booking.cls.preemptible
        if victim_rows:  # the victims' claims just changed: ask the database
            pre.write_claims(s)  # with the claims this batch added so far
            check_free(s, node_id, indices, start, end, firm=firm)
        else:
            pre.check_free(node_id, indices, start, end, firm)
        pre.claims[node_id].extend((i, start, end, firm, alloc_id) for i in indices)
        s.add(
            AllocationRow(
                id=alloc_id,
                org_id=row.org_id,
                project_id=row.project_id,
                instance_id=row.id,
                node_id=node_id,
                gpu_model=row.gpu_model,
                gpu_count=booking.gpus,
                gpu_indices=indices,
                vcpus=booking.vcpus,
                ram_gib=booking.ram_gib,
                cls=booking.cls.value,
                start_at=start,
                end_at=end,
                created_at=now,
                studio_job_id=row.studio_job_id,
            )
        )
        pre.new_claims.extend(
            {
                "allocation_id": alloc_id,
                "gpu_index": i,
                "node_id": node_id,
                "firm": firm,
                "start_at": start,
                "end_at": end,
            }
            for i in indices
        )
        row.node_id, row.gpu_indices, row.allocation_id = node_id, indices, alloc_id
        row.scheduled_at = now
        row.due_at = start  # the reconciler provisions from then on
        move_instance(s, row, InstanceState.PROVISIONING, now)
        if end is not None and booking.cls.preemptible:
            # spot on a node booked later by a reservation: it ends when that starts
            request_stop(s, row, now, reason=Reason.PREEMPTED, at=end)
        return stopped

    return write
