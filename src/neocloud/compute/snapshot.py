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
from neocloud.fleet.domain import Health, NodeState
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


def node_eligible(node: NodeRow) -> bool:
    return (
        NodeState(node.state) in OPEN_STATES
        and not node.hold
        and node.drain_requested_at is None
        and node.health != Health.FAILED.value
    )


@dataclass
class Snapshot:
    levels: tuple[str, ...]
    nodes: dict[str, NodeRow]
    allocations: list[AllocationRow]
    used_indices: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))

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
            if a.node_id in self.nodes
        ]


def levels_of(s: Session) -> tuple[str, ...]:
    row = s.get(FleetSettingsRow, 1)
    return tuple(row.levels) if row is not None and row.levels else DEFAULT_LEVELS


def live_allocations(s: Session, now: datetime) -> list[AllocationRow]:
    """Allocations that have not ended by ``now`` (open-ended, or ending later)."""
    stmt = sa.select(AllocationRow).where(
        sa.or_(AllocationRow.end_at.is_(None), AllocationRow.end_at > now)
    )
    return list(s.scalars(stmt))


def load_snapshot(s: Session, now: datetime, *, gpu_model: str | None = None) -> Snapshot:
    # Every node but retired ones: ineligible nodes stay in the snapshot (placement skips
    # them) so that their bookings are known and a failed one can be replaced near itself.
    stmt = sa.select(NodeRow).where(NodeRow.state != NodeState.RETIRED.value)
    if gpu_model is not None:
        stmt = stmt.where(NodeRow.gpu_model == gpu_model)
    nodes = {n.id: n for n in s.scalars(stmt)}
    allocs = [a for a in live_allocations(s, now) if a.node_id in nodes]
    snap = Snapshot(levels_of(s), nodes, allocs)
    for a in allocs:
        snap.used_indices[a.node_id].update(a.gpu_indices)
    return snap


def free_gpus(snap: Snapshot, now: datetime) -> dict[str, tuple[int, int]]:
    """Per GPU model: (GPUs free now on eligible nodes, GPUs on eligible nodes)."""
    used: dict[str, int] = defaultdict(int)
    for a in snap.allocations:
        if a.start_at <= now:
            used[a.node_id] += a.gpu_count
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for n in snap.nodes.values():
        if not node_eligible(n):
            continue
        out[n.gpu_model][0] += max(n.gpu_count - used[n.id], 0)
        out[n.gpu_model][1] += n.gpu_count
    return {k: (v[0], v[1]) for k, v in out.items()}
