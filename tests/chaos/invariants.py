"""The invariant checker of the chaos and soak runs: what must hold afterwards, proven from the
database and the API, whatever processes died on the way.

* no GPU was claimed twice at one instant (two instances' claims on one GPU never overlap);
* every instance that ran has exactly one allocation (its billing interval), closed iff the
  instance ended; an instance that never ran is billed nothing; every allocation on the invoice
  preview exactly once;
* every usage event sent (replays included) is stored once and counted once on the preview;
* nothing stays in a transient state past its timeout;
* every idempotent replay returned the same object as the first answer.

``check`` returns the violations as sentences (none: the run passed).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from neocloud.billing.tables import UsageEventRow
from neocloud.compute.tables import (
    AllocationRow,
    ClusterRow,
    ComputeEventRow,
    GpuClaimRow,
    InstanceRow,
)
from neocloud.db.engine import Database
from neocloud.fleet.tables import NodeRow

INSTANCE_TRANSIENT = ("pending", "provisioning", "stopping")
CLUSTER_TRANSIENT = ("pending", "provisioning", "stopping")
NODE_TRANSIENT = ("allocated", "provisioning", "releasing", "wiping")
INSTANCE_ENDED = ("terminated", "failed", "preempted")


@dataclass
class Record:
    """What the clients did, as they saw it (thread-safe appends)."""

    operations: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    replays: list[tuple[str, str, str]] = field(default_factory=list)  # (what, first, replay)
    usage_sent: dict[tuple[str, str], int] = field(default_factory=dict)  # (org, id) -> tokens
    # Chat requests per org: answered (200), and attempted (answered, refused or cut off). A
    # proxied answer carries the upstream's id, not the gateway's request id, so the checker
    # counts: answered <= billed <= attempted (an answer lost to a kill may still be billed).
    studio_answered: Counter[str] = field(default_factory=Counter)
    studio_attempted: Counter[str] = field(default_factory=Counter)
    instances: set[str] = field(default_factory=set)
    clusters: set[str] = field(default_factory=set)
    latencies_s: list[tuple[float, float]] = field(default_factory=list)  # (at, seconds)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def op(self, name: str) -> None:
        with self.lock:
            self.operations[name] += 1

    def error(self, name: str) -> None:
        with self.lock:
            self.errors[name] += 1


def double_claims(db: Database) -> list[str]:
    """Pairs of instance claims on one GPU whose intervals overlap (empty intervals never do)."""
    a, b = sa.orm.aliased(GpuClaimRow), sa.orm.aliased(GpuClaimRow)
    aa, ab = sa.orm.aliased(AllocationRow), sa.orm.aliased(AllocationRow)
    far = datetime(9999, 1, 1)
    overlap = sa.and_(
        a.node_id == b.node_id,
        a.gpu_index == b.gpu_index,
        a.allocation_id < b.allocation_id,
        a.start_at < sa.func.coalesce(b.end_at, far),
        b.start_at < sa.func.coalesce(a.end_at, far),
        sa.func.coalesce(a.end_at, far) > a.start_at,
        sa.func.coalesce(b.end_at, far) > b.start_at,
    )
    with db.transaction() as s:
        rows = s.execute(
            sa.select(a.node_id, a.gpu_index, a.allocation_id, b.allocation_id)
            .select_from(a)
            .join(b, overlap)
            .join(aa, aa.id == a.allocation_id)
            .join(ab, ab.id == b.allocation_id)
            .where(aa.instance_id.is_not(None), ab.instance_id.is_not(None))
        ).all()
    return [f"GPU {n}#{g} claimed by {x} and {y} at once" for n, g, x, y in rows]


def allocation_violations(db: Database) -> list[str]:
    out: list[str] = []
    with db.transaction() as s:
        allocs = s.execute(
            sa.select(
                AllocationRow.id,
                AllocationRow.instance_id,
                AllocationRow.start_at,
                AllocationRow.end_at,
            ).where(AllocationRow.instance_id.is_not(None))
        ).all()
        instances = {r.id: r for r in s.scalars(sa.select(InstanceRow))}
    per_instance = Counter(a.instance_id for a in allocs)
    for iid, n in per_instance.items():
        if n > 1:
            out.append(f"instance {iid} has {n} allocations (billed {n} times)")
    by_instance = {a.instance_id: a for a in allocs}
    for iid, row in instances.items():
        alloc = by_instance.get(iid)
        if row.running_at is not None and alloc is None:
            out.append(f"instance {iid} ran without an allocation (never billed)")
        if alloc is None:
            continue
        if row.state in INSTANCE_ENDED and alloc.end_at is None:
            out.append(f"instance {iid} is {row.state} but its allocation is still open")
        if row.state in ("running", "provisioning") and alloc.end_at is not None:
            out.append(f"instance {iid} is {row.state} but its allocation ended")
        failed_unrun = row.state == "failed" and row.running_at is None
        if failed_unrun and alloc.end_at is not None and alloc.end_at > alloc.start_at:
            # it never ran: the tenant's failed time must not be billed
            out.append(f"instance {iid} failed unrun but {alloc.end_at - alloc.start_at} billed")
    return out


def repeated_transitions(db: Database) -> list[str]:
    """A state entered twice by one instance or cluster: a step done twice (none of their
    states is entered more than once in a lifetime)."""
    with db.transaction() as s:
        rows = s.execute(
            sa.select(ComputeEventRow.subject_id, ComputeEventRow.to_state, sa.func.count())
            .where(ComputeEventRow.to_state.is_not(None))
            .where(
                ComputeEventRow.subject_id.like("inst_%") | ComputeEventRow.subject_id.like("clu_%")
            )
            .group_by(ComputeEventRow.subject_id, ComputeEventRow.to_state)
            .having(sa.func.count() > 1)
        ).all()
    return [f"{sid} entered {state} {n} times" for sid, state, n in rows]


def preview_violations(admin: Any, db: Database, record: Record, period: str) -> list[str]:
    """Every allocation, usage event sent and studio request answered is stored once and on the
    preview exactly once."""
    out: list[str] = []
    with db.transaction() as s:
        allocs = s.execute(
            sa.select(AllocationRow.id, AllocationRow.org_id).where(
                AllocationRow.end_at.is_(None) | (AllocationRow.end_at > AllocationRow.start_at)
            )
        ).all()
        events = s.execute(
            sa.select(
                UsageEventRow.org_id,
                UsageEventRow.event_id,
                UsageEventRow.data,
                UsageEventRow.source,
            )
        ).all()
    stored = Counter((org, event_id) for org, event_id, _, _ in events)
    studio_billed = Counter(org for org, _, _, source in events if source == "studio")
    for key in record.usage_sent:
        if stored.get(key, 0) != 1:
            out.append(f"usage event {key} stored {stored.get(key, 0)} times")
    for org in record.studio_attempted:
        answered, attempted = record.studio_answered[org], record.studio_attempted[org]
        if not answered <= studio_billed[org] <= attempted:
            out.append(
                f"org {org}: {answered} chat requests answered, {attempted} attempted, "
                f"{studio_billed[org]} billed"
            )
    tokens_stored = Counter[str]()
    for org, _, data, _ in events:
        tokens_stored[org] += int(data.get("input_tokens", 0))
    orgs = {o for o, _ in allocs} | set(tokens_stored)
    for org in sorted(orgs):
        preview = admin.invoices.preview(org, period)
        on_lines = Counter(f for line in preview["lines"] for f in line["fact_ids"])
        for alloc_id, alloc_org in allocs:
            if alloc_org == org and on_lines.get(alloc_id, 0) != 1:
                out.append(f"allocation {alloc_id} on the preview {on_lines.get(alloc_id, 0)}x")
        tokens = sum(t["input_tokens"] for t in preview["token_lines"])
        if tokens != tokens_stored[org]:
            out.append(f"org {org}: {tokens_stored[org]} input tokens stored, {tokens} on preview")
        facts = Counter(f for t in preview["token_lines"] for f in t["fact_ids"])
        if any(n != 1 for n in facts.values()):
            out.append(f"org {org}: a usage fact counted twice on the preview")
    return out


def stuck(db: Database, now: datetime, timeout: timedelta) -> list[str]:
    """Rows in a transient state not updated for ``timeout``."""
    cut = now - timeout
    out: list[str] = []
    with db.transaction() as s:
        for iid, state in s.execute(
            sa.select(InstanceRow.id, InstanceRow.state).where(
                InstanceRow.state.in_(INSTANCE_TRANSIENT), InstanceRow.updated_at < cut
            )
        ):
            out.append(f"instance {iid} stuck {state}")
        for cid, state in s.execute(
            sa.select(ClusterRow.id, ClusterRow.state).where(
                ClusterRow.state.in_(CLUSTER_TRANSIENT), ClusterRow.updated_at < cut
            )
        ):
            out.append(f"cluster {cid} stuck {state}")
        for nid, state in s.execute(
            sa.select(NodeRow.id, NodeRow.state).where(
                NodeRow.state.in_(NODE_TRANSIENT), NodeRow.updated_at < cut
            )
        ):
            out.append(f"node {nid} stuck {state}")
    return out


def replay_violations(record: Record) -> list[str]:
    return [
        f"{what}: replay answered {replay}, first answer {first}"
        for what, first, replay in record.replays
        if first != replay
    ]


def check(
    *,
    db: Database,
    admin: Any,
    record: Record,
    now: datetime,
    period: str,
    transient_timeout: timedelta,
) -> list[str]:
    """Every violation found (target: none)."""
    return [
        *double_claims(db),
        *allocation_violations(db),
        *repeated_transitions(db),
        *preview_violations(admin, db, record, period),
        *stuck(db, now, transient_timeout),
        *replay_violations(record),
    ]
