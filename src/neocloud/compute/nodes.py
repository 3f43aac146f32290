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
from neocloud.fleet.domain import NodeState
from neocloud.fleet.service import change_node
from neocloud.fleet.tables import NodeRow

ACTOR = "compute"


def lock_node(s: Session, node_id: str) -> NodeRow | None:
    return s.scalars(sa.select(NodeRow).where(NodeRow.id == node_id).with_for_update()).first()


def move_node(s: Session, node: NodeRow, target: NodeState, now: datetime, reason: str) -> None:
    """Move ``node`` to ``target`` (or to cordoned, under a hold) and record the event."""
    change_node(s, node, lambda lc: fleet_domain.settle(lc, target), now, reason, ACTOR)
