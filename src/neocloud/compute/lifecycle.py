"""Every state change of an instance, a cluster or a reservation, and the events that record it.

One rule for all three machines (``domain.INSTANCE``, ``CLUSTER``, ``RESERVATION``):

- the move must be in the machine's transitions table (else ``IllegalTransition``);
- ``state_reason`` and ``state_message`` become the reason and message given with the move
  (None clears them): they say why the object is in the state it is in now, not in an earlier
  one;
- ``running_at`` is set the first time the machine enters its running state and never moves
  after (a cluster back from ``degraded`` ran since then); ``ended_at`` is set on a final state;
- a ``state`` event records before → after with the reason and message.

Changes that are not state changes (a stop requested for later, a queued note) are here too, so
that what a tenant reads on an object and in its events is written in one place.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.compute.domain import (
    CLUSTER,
    INSTANCE,
    INSTANCE_FINAL,
    RESERVATION,
    ClusterState,
    InstanceState,
    Lifecycle,
    Reason,
    ReservationState,
)
from neocloud.compute.tables import ClusterRow, ComputeEventRow, InstanceRow, ReservationRow
from neocloud.db import bulk
from neocloud.kernel.ids import new_id
from neocloud.placement import NoCapacity

EVENTS: sa.Table = ComputeEventRow.__table__  # type: ignore[assignment]
MAX_MESSAGE = 1000

S = TypeVar("S", InstanceState, ClusterState, ReservationState)


def record_event(
    s: Session,
    *,
    subject_id: str,
    org_id: str,
    now: datetime,
    kind: str,
    from_state: str | None = None,
    to_state: str | None = None,
    reason: str | None = None,
    message: str | None = None,
    node_id: str | None = None,
) -> None:
    """Append an event to an instance's, cluster's or reservation's history."""
    row = {
        "id": new_id("evt", at=now),
        "subject_id": subject_id,
        "org_id": org_id,
        "at": now,
        "kind": kind,
        "from_state": from_state,
        "to_state": to_state,
        "reason": reason,
        "message": message[:MAX_MESSAGE] if message else None,
        "node_id": node_id,
    }
    if not bulk.buffer(s, EVENTS, row):  # inside a bulk block it is written with the rest
        s.add(ComputeEventRow(**row))


def _move(
    s: Session,
    row: InstanceRow | ClusterRow | ReservationRow,
    machine: Lifecycle[S],
    before: S,
    target: S,
    now: datetime,
    reason: str | None,
    message: str | None,
) -> None:
    row.state = machine.go(before, target).value
    row.state_reason = reason
    row.updated_at = now
    if not isinstance(row, ReservationRow):  # a reservation keeps no message or times of its own
        row.state_message = message[:MAX_MESSAGE] if message else None
        if target is machine.running and row.running_at is None:
            row.running_at = now
        if target in machine.final:
            row.ended_at = now
    record_event(
        s,
        subject_id=row.id,
        org_id=row.org_id,
        now=now,
        kind="state",
        from_state=before.value,
        to_state=row.state,
        reason=reason,
        message=message,
        node_id=row.node_id if isinstance(row, InstanceRow) else None,
    )


def move_instance(
    s: Session,
    row: InstanceRow,
    target: InstanceState,
    now: datetime,
    *,
    reason: str | None = None,
    message: str | None = None,
) -> None:
    """Move an instance to ``target`` (the module's rule) and record the event."""
    _move(s, row, INSTANCE, InstanceState(row.state), target, now, reason, message)


def move_cluster(
    s: Session,
    row: ClusterRow,
    target: ClusterState,
    now: datetime,
    *,
    reason: str | None = None,
    message: str | None = None,
) -> None:
    """Move a cluster to ``target`` (the module's rule) and record the event."""
    _move(s, row, CLUSTER, ClusterState(row.state), target, now, reason, message)


def move_reservation(
    s: Session,
    row: ReservationRow,
    target: ReservationState,
    now: datetime,
    *,
    reason: str | None = None,
    message: str | None = None,
) -> None:
    """Move a reservation to ``target`` (the module's rule) and record the event."""
    _move(s, row, RESERVATION, ReservationState(row.state), target, now, reason, message)


def request_stop(
    s: Session, row: InstanceRow, now: datetime, *, reason: Reason, at: datetime
) -> None:
    """Mark a placed instance to stop at ``at`` (a preemption notice, a reservation's end)."""
    if row.stop_at is not None and row.stop_at <= at:
        return
    row.stop_reason = reason.value
    row.stop_at = at
    row.updated_at = now
    record_event(
        s,
        subject_id=row.id,
        org_id=row.org_id,
        now=now,
        kind="stop_requested",
        reason=reason.value,
        message=f"stops at {at.isoformat()}",
        node_id=row.node_id,
    )


def stop_members(
    s: Session, cluster: ClusterRow, now: datetime, *, reason: Reason, at: datetime
) -> None:
    """End a cluster's pending members now and ask its placed ones to stop at ``at``."""
    # The caller holds the cluster's row lock: the scheduler moves pending members only under
    # it, so a member read here as pending has not been placed behind our back.
    members = s.scalars(sa.select(InstanceRow).where(InstanceRow.cluster_id == cluster.id))
    for m in members:
        state = InstanceState(m.state)
        if state is InstanceState.PENDING:
            move_instance(s, m, InstanceState.TERMINATED, now, reason=reason.value)
        elif state not in INSTANCE_FINAL:
            request_stop(s, m, now, reason=reason, at=at)


def write_queued(s: Session, row: InstanceRow | ClusterRow, no: NoCapacity, now: datetime) -> None:
    """Record on a pending instance or cluster that it waits for capacity, and why."""
    until = row.queue_until.isoformat() if row.queue_until else "?"
    row.state_message = f"queued until {until}: {no.reason}"[:MAX_MESSAGE]
    row.updated_at = now
    record_event(s, subject_id=row.id, org_id=row.org_id, now=now, kind="queued", message=no.reason)
