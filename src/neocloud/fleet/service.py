"""Fleet use cases: import a spec, list and read nodes, move them through their lifecycle.

Each function is one transaction. Topology filters go through ``node_domains`` (indexed on
level, name), label filters through ``node_labels``, so filtering by any level stays fast at
tens of thousands of nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.db import bulk
from neocloud.db.base import table_of
from neocloud.db.engine import Database
from neocloud.db.pagination import Page, paginate
from neocloud.fleet import domain
from neocloud.fleet.catalog import resolve_gpu_model
from neocloud.fleet.domain import (
    CheckStatus,
    Health,
    Lifecycle,
    Move,
    NodeRole,
    NodeState,
    parse_enum,
)
from neocloud.fleet.imports import IMPORT_STATES as IMPORT_STATES
from neocloud.fleet.imports import ImportResult as ImportResult
from neocloud.fleet.imports import import_spec as import_spec
from neocloud.fleet.spec import DEFAULT_LEVELS
from neocloud.fleet.tables import (
    DomainRow,
    FleetSettingsRow,
    HealthCheckRow,
    NodeDomainRow,
    NodeEventRow,
    NodeLabelRow,
    NodeRow,
)
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import NotFound, ValidationFailed
from neocloud.kernel.ids import new_id

NODE_EVENTS = table_of(NodeEventRow)


@dataclass(frozen=True)
class NodeFilter:
    role: str | None = None
    gpu_model: str | None = None
    state: str | None = None
    health: str | None = None
    hostname: str | None = None
    domains: dict[str, str] = field(default_factory=dict)  # level -> name
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: CheckStatus
    message: str | None = None


# --- reading --------------------------------------------------------------------------------


def count_nodes(*, db: Database) -> int:
    with db.transaction() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(NodeRow)) or 0)


def fleet_levels(*, db: Database) -> list[str]:
    with db.transaction() as session:
        return _levels(session)


def _levels(session: Session) -> list[str]:
    row = session.get(FleetSettingsRow, 1)
    return list(row.levels) if row is not None else list(DEFAULT_LEVELS)


def get_node(*, db: Database, node_id: str) -> NodeRow:
    with db.transaction() as session:
        return _node(session, node_id)


def _node(session: Session, node_id: str, *, lock: bool = False) -> NodeRow:
    node = session.get(NodeRow, node_id, with_for_update=lock)
    if node is None:
        raise NotFound(f"no node {node_id} exists", code="node_not_found", param="node_id")
    return node


def list_nodes(
    *, db: Database, filters: NodeFilter, limit: int, after: str | None
) -> Page[NodeRow]:
    """Nodes matching every filter, ordered by id, one page."""
    with db.transaction() as session:
        stmt = sa.select(NodeRow)
        if filters.role:
            stmt = stmt.where(NodeRow.role == parse_enum(NodeRole, filters.role, "role").value)
        if filters.gpu_model:
            stmt = stmt.where(NodeRow.gpu_model == resolve_gpu_model(filters.gpu_model).id)
        if filters.state:
            stmt = stmt.where(NodeRow.state == parse_enum(NodeState, filters.state, "state").value)
        if filters.health:
            stmt = stmt.where(NodeRow.health == parse_enum(Health, filters.health, "health").value)
        if filters.hostname:
            stmt = stmt.where(NodeRow.hostname == filters.hostname)
        if filters.domains:
            levels = _levels(session)
            for level, name in filters.domains.items():
                if level not in levels:
                    raise ValidationFailed(
                        f"unknown topology level {level!r}; the fleet's levels are "
                        f"{', '.join(levels)}",
                        code="unknown_level",
                        param=level,
                    )
                stmt = stmt.where(
                    NodeRow.id.in_(
                        sa.select(NodeDomainRow.node_id).where(
                            NodeDomainRow.level == level, NodeDomainRow.name == name
                        )
                    )
                )
        for key, value in filters.labels.items():
            stmt = stmt.where(
                NodeRow.id.in_(
                    sa.select(NodeLabelRow.node_id).where(
                        NodeLabelRow.key == key, NodeLabelRow.value == value
                    )
                )
            )
        return paginate(session, stmt, NodeRow.id.expression, limit=limit, after=after)


def list_health_checks(
    *, db: Database, node_id: str, limit: int, after: str | None
) -> Page[HealthCheckRow]:
    """The node's reported check results, oldest first."""
    with db.transaction() as session:
        _node(session, node_id)
        stmt = sa.select(HealthCheckRow).where(HealthCheckRow.node_id == node_id)
        return paginate(session, stmt, HealthCheckRow.id.expression, limit=limit, after=after)


def list_node_events(
    *, db: Database, node_id: str, limit: int, after: str | None
) -> Page[NodeEventRow]:
    with db.transaction() as session:
        _node(session, node_id)
        stmt = sa.select(NodeEventRow).where(NodeEventRow.node_id == node_id)
        return paginate(session, stmt, NodeEventRow.id.expression, limit=limit, after=after)


@dataclass(frozen=True)
class SummaryLine:
    gpu_model: str
    state: str
    domain: str | None
    nodes: int
    gpus: int
    health: str | None = None  # set when the summary is also grouped by health


def fleet_summary(
    *,
    db: Database,
    group_by: str | None = None,
    by_health: bool = False,
    within: tuple[str, str] | None = None,
) -> list[SummaryLine]:
    """Node and GPU counts by model x state (x health) (x the domain of one topology level),
    over the whole fleet or ``within`` one domain (its level and name: ``("fabric", "ib01")``).

    Grouped by a level, the count is one hash join of that level's rows of the topology index
    (``ix_node_domains_level_name_node``) with the nodes."""
    with db.transaction() as session:
        n = sa.func.count().label("nodes")
        g = sa.func.sum(NodeRow.gpu_count).label("gpus")
        health = NodeRow.health if by_health else sa.literal(None, sa.String())
        keys: list[Any] = [NodeRow.gpu_model, NodeRow.state]
        if by_health:
            keys.append(NodeRow.health)
        if group_by is None:
            stmt = sa.select(
                NodeRow.gpu_model, NodeRow.state, sa.literal(None, sa.String()), n, g, health
            ).group_by(*keys)
        else:
            levels = _levels(session)
            if group_by not in levels:
                raise ValidationFailed(
                    f"group_by must be one of the fleet's levels: {', '.join(levels)}",
                    code="unknown_level",
                    param="group_by",
                )
            stmt = (
                sa.select(NodeRow.gpu_model, NodeRow.state, NodeDomainRow.name, n, g, health)
                .join(NodeDomainRow, NodeDomainRow.node_id == NodeRow.id)
                .where(NodeDomainRow.level == group_by)
                .group_by(NodeDomainRow.name, *keys)
            )
        if within is not None:
            level, name = within
            if level not in _levels(session):
                raise ValidationFailed(
                    f"within_level must be one of the fleet's levels: "
                    f"{', '.join(_levels(session))}",
                    code="unknown_level",
                    param="within_level",
                )
            inside = sa.select(NodeDomainRow.node_id).where(
                NodeDomainRow.level == level, NodeDomainRow.name == name
            )
            stmt = stmt.where(NodeRow.id.in_(inside))
        lines = [
            SummaryLine(m, s, d, int(c), int(gp or 0), h)
            for m, s, d, c, gp, h in session.execute(stmt)
        ]
    return sorted(lines, key=lambda x: (x.gpu_model, x.domain or "", x.state, x.health or ""))


def gpu_capacity(*, db: Database) -> list[tuple[int, datetime]]:
    """(GPUs, in service since) of the nodes not retired, summed per date (an imported fleet
    shares a handful of them): utilization's denominator in one light query. A node counts
    from when the platform knew it: no allocation can predate that."""
    with db.transaction() as session:
        rows = session.execute(
            sa.select(sa.func.sum(NodeRow.gpu_count), NodeRow.in_service_at, NodeRow.created_at)
            .where(NodeRow.state != NodeState.RETIRED.value)
            .group_by(NodeRow.in_service_at, NodeRow.created_at)
        ).all()
    by_since: dict[datetime, int] = {}
    for gpus, in_service, created in rows:
        since = max(in_service or created, created)
        by_since[since] = by_since.get(since, 0) + int(gpus)
    return [(gpus, since) for since, gpus in sorted(by_since.items())]


@dataclass(frozen=True)
class DomainCount:
    level: str
    name: str
    parent: str
    nodes: int
    gpus: int


def topology(*, db: Database, level: str | None = None) -> tuple[list[str], list[DomainCount]]:
    """The fleet's levels and its domains with node and GPU counts (one level or all)."""
    with db.transaction() as session:
        levels = _levels(session)
        if level is not None and level not in levels:
            raise ValidationFailed(
                f"level must be one of: {', '.join(levels)}", code="unknown_level", param="level"
            )
        stmt = (
            sa.select(
                NodeDomainRow.level,
                NodeDomainRow.name,
                sa.func.count(),
                sa.func.sum(NodeRow.gpu_count),
            )
            .join(NodeRow, NodeRow.id == NodeDomainRow.node_id)
            .group_by(NodeDomainRow.level, NodeDomainRow.name)
        )
        if level is not None:
            stmt = stmt.where(NodeDomainRow.level == level)
        counts = {(lv, nm): (int(c), int(gp or 0)) for lv, nm, c, gp in session.execute(stmt)}
        dstmt = sa.select(DomainRow)
        if level is not None:
            dstmt = dstmt.where(DomainRow.level == level)
        order = {lv: i for i, lv in enumerate(levels)}
        out = [
            DomainCount(d.level, d.name, d.parent_path, *counts.get((d.level, d.name), (0, 0)))
            for d in session.scalars(dstmt)
        ]
    out.sort(key=lambda d: (order.get(d.level, 99), d.name))
    return levels, out


# --- lifecycle --------------------------------------------------------------------------------

Step = Callable[[Lifecycle], tuple[Lifecycle, list[Move]]]


def _apply(
    *,
    db: Database,
    clock: Clock,
    node_id: str,
    step: Step,
    reason: str | None,
    actor: str,
    drain: bool = False,
) -> NodeRow:
    with db.transaction() as session:
        node = _node(session, node_id, lock=True)
        change_node(session, node, step, clock.now(), reason, actor, drain=drain)
        return node


def change_node(
    session: Session,
    node: NodeRow,
    step: Step,
    now: datetime,
    reason: str | None,
    actor: str,
    *,
    drain: bool = False,
) -> None:
    """Apply a lifecycle ``step`` to a locked ``node`` inside the caller's transaction.

    Writes the row and one event per move; compute calls it so that a node move commits
    together with the allocation change that caused it.
    """
    before = Lifecycle(
        NodeState(node.state),
        node.hold,
        node.drain_requested_at is not None,
        NodeState(node.resume_state) if node.resume_state else None,
    )
    after, moves = step(before)
    if not moves and after == before:
        return
    node.state = after.state.value
    node.hold = after.hold
    node.resume_state = after.resume.value if after.resume else None
    if after.drain and not before.drain:
        node.drain_requested_at = now
    elif not after.drain:
        node.drain_requested_at = None
    if moves:
        node.state_reason = reason
    node.updated_at = now
    for move in moves or [Move(before.state, after.state)]:
        row = {
            "id": new_id("evt", at=now),
            "node_id": node.id,
            "at": now,
            "from_state": move.before.value,
            "to_state": move.after.value,
            "reason": reason if moves else f"hold: {reason or ''}".strip(),
            "actor": actor,
        }
        if not bulk.buffer(session, NODE_EVENTS, row):  # else written with the rest
            session.add(NodeEventRow(**row))


def cordon_node(
    *, db: Database, clock: Clock, node_id: str, reason: str | None = None, actor: str = "system"
) -> NodeRow:
    """No new work on the node; a running workload keeps running (the node drains)."""
    return _apply(
        db=db,
        clock=clock,
        node_id=node_id,
        step=domain.cordon,
        reason=reason or "cordoned",
        actor=actor,
    )


def drain_node(
    *, db: Database, clock: Clock, node_id: str, reason: str | None = None, actor: str = "system"
) -> NodeRow:
    """Cordon and ask for the workload to be evicted (``drain_requested_at`` is set)."""
    return _apply(
        db=db,
        clock=clock,
        node_id=node_id,
        step=lambda lc: domain.cordon(lc, drain=True),
        reason=reason or "drain requested",
        actor=actor,
    )


def uncordon_node(
    *, db: Database, clock: Clock, node_id: str, reason: str | None = None, actor: str = "system"
) -> NodeRow:
    return _apply(
        db=db,
        clock=clock,
        node_id=node_id,
        step=domain.uncordon,
        reason=reason or "uncordoned",
        actor=actor,
    )


def retire_node(
    *, db: Database, clock: Clock, node_id: str, reason: str | None = None, actor: str = "system"
) -> NodeRow:
    return _apply(
        db=db,
        clock=clock,
        node_id=node_id,
        step=domain.retire,
        reason=reason or "retired",
        actor=actor,
    )


def transition_node(
    *,
    db: Database,
    clock: Clock,
    node_id: str,
    to: NodeState | str,
    reason: str | None = None,
    actor: str = "system",
) -> NodeRow:
    """Move a node to ``to`` through the transitions table (an illegal move is a 409)."""
    target = parse_enum(NodeState, str(to), "to")
    return _apply(
        db=db,
        clock=clock,
        node_id=node_id,
        step=lambda lc: domain.settle(lc, target),
        reason=reason,
        actor=actor,
    )


def report_health(
    *,
    db: Database,
    clock: Clock,
    node_id: str,
    checks: Sequence[CheckResult],
    actor: str = "system",
) -> NodeRow:
    """Record check results; the node's health is the worst latest result of each check.

    A failing check takes the node out of service (``failed``) from any state but retired.
    """
    with db.transaction() as session:
        node = _node(session, node_id, lock=True)
        apply_checks(session, node, checks, clock.now(), actor)
        return node


def apply_checks(
    session: Session,
    node: NodeRow,
    checks: Sequence[CheckResult],
    now: datetime,
    actor: str,
    *,
    changes_only: bool = False,
) -> bool:
    """Record ``checks`` on a locked ``node`` inside the caller's transaction (what
    ``report_health`` does); ``changes_only``: a result whose status and message equal the
    check's latest is not written again (the agent's heartbeats repeat their results). Returns
    whether anything was written."""
    latest = dict(node.health_checks or {})
    changed = False
    for check in checks:
        before = latest.get(check.name)
        same = before is not None and (before.get("status"), before.get("message")) == (
            check.status.value,
            check.message,
        )
        if changes_only and same:
            continue
        changed = True
        session.add(
            HealthCheckRow(
                id=new_id("hc", at=now),
                node_id=node.id,
                at=now,
                name=check.name,
                status=check.status.value,
                message=check.message,
            )
        )
        latest[check.name] = {
            "status": check.status.value,
            "message": check.message,
            "at": now.isoformat(),
        }
    if not changed:
        return False
    node.health_checks = latest
    node.health = domain.aggregate_health(v["status"] for v in latest.values()).value
    node.updated_at = now
    if node.health == Health.FAILED.value:
        failing = [
            f"{n}: {v.get('message') or 'failed'}"
            for n, v in latest.items()
            if v["status"] == CheckStatus.FAIL.value
        ]
        why = ("health check failed: " + "; ".join(failing))[:500]  # the reason's column width
        change_node(session, node, domain.fail, now, why, actor)
    return True
