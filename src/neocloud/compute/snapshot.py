"""What placement sees, read from the database: eligible nodes and live allocations.

Times go to placement as seconds since the Unix epoch.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.compute.tables import AllocationRow
from neocloud.drivers.base import driver_shares_nodes
from neocloud.fleet.domain import Health, NodeRole, NodeState
from neocloud.fleet.tables import FleetSettingsRow, NodeRow
from neocloud.placement import Booking, BookingClass, NodeSnapshot

# Nodes that may take new work: idle, or busy with room left for more slices.
OPEN_STATES = frozenset(
    {NodeState.AVAILABLE, NodeState.ALLOCATED, NodeState.PROVISIONING, NodeState.IN_USE}
)
DEFAULT_LEVELS = ("region", "zone", "fabric", "block", "rack")


def ts(when: datetime) -> float:
    return when.timestamp()


def from_ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def whole_only(node: NodeRow) -> bool:
    """Whether the node's driver never shares it (bare metal): whole-node workloads only."""
    return not driver_shares_nodes(node.driver or "sim")


def node_eligible(node: NodeRow) -> bool:
    return (
        (node.role or NodeRole.GPU.value) == NodeRole.GPU.value
        and NodeState(node.state) in OPEN_STATES
        and not node.hold
        and node.drain_requested_at is None
        and node.health != Health.FAILED.value
    )


@dataclass
class _Span:
    """GPUs of a node an allocation takes during ``[start, end)``."""

    alloc_id: str
    start: datetime
    end: datetime | None
    gpus: set[int]


@dataclass
class Snapshot:
    levels: tuple[str, ...]
    nodes: dict[str, NodeRow]
    allocations: list[AllocationRow]
    # node id -> which of its GPUs are taken when
    spans: dict[str, list[_Span]] = field(default_factory=lambda: defaultdict(list))

    def add_span(
        self, node_id: str, alloc_id: str, start: datetime, end: datetime | None, idx: list[int]
    ) -> None:
        self.spans[node_id].append(_Span(alloc_id, start, end, set(idx)))

    def end_span(self, alloc_id: str, node_id: str, end: datetime) -> None:
        for span in self.spans[node_id]:
            if span.alloc_id == alloc_id:
                span.end = end

    def used(self, node_id: str, start: datetime, end: datetime | None) -> set[int]:
        """GPU indices of the node taken by an allocation overlapping ``[start, end)``."""
        out: set[int] = set()
        for span in self.spans[node_id]:
            if (end is None or span.start < end) and (span.end is None or span.end > start):
                out |= span.gpus
        return out

    def node_snapshots(self) -> list[NodeSnapshot]:
        return [
            NodeSnapshot(
                n.id,
                n.gpu_model,
                n.gpu_count,
                n.vcpus,
                n.ram_gib,
                tuple(n.topology.get(level, "") for level in self.levels),
                node_eligible(n),
                whole_only(n),
            )
            for n in self.nodes.values()
        ]

    def bookings(self) -> list[Booking]:
        return [
            Booking(
                a.id,
                a.node_id,
                ts(a.start_at),
                None if a.end_at is None else ts(a.end_at),
                BookingClass(a.cls),
                a.org_id,
                0,
                a.gpu_count,
                a.vcpus,
                a.ram_gib,
                a.instance_id or a.cluster_id or a.reservation_id or a.id,
            )
            for a in self.allocations
            # an instance inside a reservation uses GPUs the reservation's booking holds
            if a.node_id in self.nodes and not (a.reservation_id and a.instance_id)
        ]


def levels_of(s: Session) -> tuple[str, ...]:
    row = s.get(FleetSettingsRow, 1)
    return tuple(row.levels) if row is not None and row.levels else DEFAULT_LEVELS


def live_allocations(s: Session, now: datetime) -> list[AllocationRow]:
    """Allocations that have not ended by ``now`` (open-ended, or ending later)."""
    stmt = sa.select(AllocationRow).where(
        sa.or_(
            AllocationRow.end_at.is_(None),
            sa.and_(AllocationRow.end_at > now, AllocationRow.end_at > AllocationRow.start_at),
        )
    )
    return list(s.scalars(stmt))


def load_snapshot(s: Session, now: datetime, *, gpu_model: str | None = None) -> Snapshot:
    # Every node but retired ones: ineligible nodes stay in the snapshot (placement skips
    # them) so that their bookings are known and a failed one can be replaced near itself.
    # Storage and service nodes are the platform's own: never rented, never in a snapshot.
    stmt = sa.select(NodeRow).where(
        NodeRow.state != NodeState.RETIRED.value, NodeRow.role == NodeRole.GPU.value
    )
    if gpu_model is not None:
        stmt = stmt.where(NodeRow.gpu_model == gpu_model)
    nodes = {n.id: n for n in s.scalars(stmt)}
    allocs = [a for a in live_allocations(s, now) if a.node_id in nodes]
    snap = Snapshot(levels_of(s), nodes, allocs)
    for a in allocs:
        snap.add_span(a.node_id, a.id, a.start_at, a.end_at, list(a.gpu_indices))
    return snap


def free_gpus(snap: Snapshot, now: datetime) -> dict[str, tuple[int, int]]:
    """Per GPU model: (GPUs free now on eligible nodes, GPUs on eligible nodes)."""
    return {k: (v.free, v.total) for k, v in free_gpu_counts(snap, now).items()}


@dataclass(frozen=True)
class FreeGpus:
    """GPUs of one model now: ``free`` and ``total`` on eligible nodes; ``partial_free`` and
    ``partial_total`` on those of them that may be shared (a partial-node instance type only
    lands there: bare-metal nodes take whole-node requests only); ``whole_free_nodes`` the
    eligible nodes with every GPU free, by GPU count."""

    free: int = 0
    total: int = 0
    partial_free: int = 0
    partial_total: int = 0
    whole_free_nodes: dict[int, int] = field(default_factory=dict)

    def can_take(self, gpus: int) -> int:
        """GPUs free now for a single-node request of ``gpus`` GPUs: every free GPU of
        shareable nodes, plus the whole-only nodes of exactly that size that are free."""
        return self.partial_free + gpus * self.whole_free_nodes.get(gpus, 0)


def free_gpu_counts(snap: Snapshot, now: datetime) -> dict[str, FreeGpus]:
    """Per GPU model: free and total GPUs now, split by whether the nodes may be shared."""
    used: dict[str, int] = defaultdict(int)
    for a in snap.allocations:
        if a.start_at <= now:
            used[a.node_id] += a.gpu_count
    acc: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    whole: dict[str, dict[int, int]] = defaultdict(dict)
    for n in snap.nodes.values():
        if not node_eligible(n):
            continue
        free = max(n.gpu_count - used[n.id], 0)
        line = acc[n.gpu_model]
        line[0] += free
        line[1] += n.gpu_count
        if whole_only(n):
            if free == n.gpu_count:
                sizes = whole[n.gpu_model]
                sizes[n.gpu_count] = sizes.get(n.gpu_count, 0) + 1
        else:
            line[2] += free
            line[3] += n.gpu_count
    return {k: FreeGpus(v[0], v[1], v[2], v[3], dict(whole[k])) for k, v in acc.items()}


@dataclass(frozen=True)
class CapacityLine:
    region: str
    gpu_model: str
    free_gpus: int
    total_gpus: int
    free_nodes: int
    partial_capable_gpus: int = 0  # free now on nodes that may be shared (not bare metal)
    partial_total_gpus: int = 0  # on eligible nodes that may be shared


def capacity_by_region(snap: Snapshot, now: datetime) -> list[CapacityLine]:
    """Free and total GPUs (and whole free nodes) now, per region and GPU model, and the free
    GPUs a partial-node instance type can use (on nodes that may be shared)."""
    used: dict[str, int] = defaultdict(int)
    for a in snap.allocations:
        if a.start_at <= now and not (a.reservation_id and a.instance_id):
            used[a.node_id] += a.gpu_count
    acc: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for n in snap.nodes.values():
        key = (n.topology.get("region", ""), n.gpu_model)
        line = acc[key]
        line[1] += n.gpu_count
        if node_eligible(n):
            free = max(n.gpu_count - used[n.id], 0)
            line[0] += free
            line[2] += 1 if free == n.gpu_count else 0
            if not whole_only(n):
                line[3] += free
                line[4] += n.gpu_count
    return [CapacityLine(region, model, *v) for (region, model), v in sorted(acc.items())]
