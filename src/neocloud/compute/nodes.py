"""Compute-driven node moves inside the caller's transaction.

The fleet's transitions table decides (``fleet.domain.settle``: a node under an operator hold
lands in ``cordoned`` instead of ``available``); this module writes the row and its event in
the same transaction as the allocation change that caused it, so the two cannot disagree.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.fleet import domain as fleet_domain
from neocloud.fleet.domain import Lifecycle, NodeState
from neocloud.fleet.tables import NodeEventRow, NodeRow
from neocloud.kernel.ids import new_id

ACTOR = "compute"


def lock_node(s: Session, node_id: str) -> NodeRow | None:
    return s.scalars(sa.select(NodeRow).where(NodeRow.id == node_id).with_for_update()).first()


def move_node(s: Session, node: NodeRow, target: NodeState, now: datetime, reason: str) -> None:
    """Move ``node`` to ``target`` (or to cordoned, under a hold) and record the event."""
    before = Lifecycle(
        NodeState(node.state),
        node.hold,
        node.drain_requested_at is not None,
        NodeState(node.resume_state) if node.resume_state else None,
    )
    after, moves = fleet_domain.settle(before, target)
    node.state = after.state.value
    node.hold = after.hold
    node.resume_state = after.resume.value if after.resume else None
    if not after.drain:
        node.drain_requested_at = None
    node.state_reason = reason
    node.updated_at = now
    for move in moves:
        s.add(
            NodeEventRow(
                id=new_id("evt", at=now),
                node_id=node.id,
                at=now,
                from_state=move.before.value,
                to_state=move.after.value,
                reason=reason,
                actor=ACTOR,
            )
        )
