"""Fleet use cases: import a spec, list and read nodes, move them through their lifecycle.

Each function is one transaction. Topology filters go through ``node_domains`` (indexed on
level, name), label filters through ``node_labels``, so filtering by any level stays fast at
tens of thousands of nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.db.engine import Database
from neocloud.db.pagination import Page, paginate
from neocloud.fleet import domain
from neocloud.fleet.catalog import resolve_gpu_model
from neocloud.fleet.domain import CheckStatus, Health, Lifecycle, Move, NodeState
from neocloud.fleet.spec import DEFAULT_LEVELS, FleetSpec, expand
from neocloud.fleet.tables import (
    DomainRow,
    FleetImportRow,
    FleetSettingsRow,
    HealthCheckRow,
    NodeDomainRow,
    NodeEventRow,
    NodeLabelRow,
    NodeRow,
)
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import Conflict, NotFound, ValidationFailed
from neocloud.kernel.ids import new_id

IMPORT_STATES = (NodeState.AVAILABLE, NodeState.ENROLLED, NodeState.BURN_IN)
_CHUNK = 1000


@dataclass(frozen=True)
class ImportResult:
    import_id: str
    nodes_created: int
    gpus_created: int
    domains_created: int
    initial_state: NodeState


@dataclass(frozen=True)
class NodeFilter:
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
        if filters.gpu_model:
            stmt = stmt.where(NodeRow.gpu_model == resolve_gpu_model(filters.gpu_model).id)
        if filters.state:
            stmt = stmt.where(NodeRow.state == _enum(NodeState, filters.state, "state").value)
        if filters.health:
            stmt = stmt.where(NodeRow.health == _enum(Health, filters.health, "health").value)
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


def list_node_events(
    *, db: Database, node_id: str, limit: int, after: str | None
) -> Page[NodeEventRow]:
    with db.transaction() as session:
        _node(session, node_id)
        stmt = sa.select(NodeEventRow).where(NodeEventRow.node_id == node_id)
        return paginate(session, stmt, NodeEventRow.id.expression, limit=limit, after=after)


def _enum(kind: Any, value: str, param: str) -> Any:
    try:
        return kind(value.strip().lower())
    except ValueError:
        known = ", ".join(m.value for m in kind)
        raise ValidationFailed(f"{param} must be one of: {known}", param=param) from None


@dataclass(frozen=True)
class SummaryLine:
    gpu_model: str
    state: str
    domain: str | None
    nodes: int
    gpus: int


def fleet_summary(*, db: Database, group_by: str | None = None) -> list[SummaryLine]:
    """Node and GPU counts by model x state (x the domain of one topology level)."""
    with db.transaction() as session:
        n = sa.func.count().label("nodes")
        g = sa.func.sum(NodeRow.gpu_count).label("gpus")
        if group_by is None:
            stmt = sa.select(
                NodeRow.gpu_model, NodeRow.state, sa.literal(None, sa.String()), n, g
            ).group_by(NodeRow.gpu_model, NodeRow.state)
        else:
            levels = _levels(session)
            if group_by not in levels:
                raise ValidationFailed(
                    f"group_by must be one of the fleet's levels: {', '.join(levels)}",
                    code="unknown_level",
                    param="group_by",
                )
            stmt = (
                sa.select(NodeRow.gpu_model, NodeRow.state, NodeDomainRow.name, n, g)
                .join(NodeDomainRow, NodeDomainRow.node_id == NodeRow.id)
                .where(NodeDomainRow.level == group_by)
                .group_by(NodeRow.gpu_model, NodeRow.state, NodeDomainRow.name)
            )
        lines = [
            SummaryLine(m, s, d, int(c), int(gp or 0)) for m, s, d, c, gp in session.execute(stmt)
        ]
    return sorted(lines, key=lambda x: (x.gpu_model, x.domain or "", x.state))


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


# --- import -----------------------------------------------------------------------------------


def import_spec(
    *,
    db: Database,
    clock: Clock,
    spec: FleetSpec,
    initial_state: NodeState | str = NodeState.AVAILABLE,
    actor: str = "system",
) -> ImportResult:
    """Load every node of ``spec`` in one transaction: all of them, or none.

    New nodes start ``available`` (or ``enrolled``/``burn_in`` for hardware still to be burnt in).
    A hostname that already exists, or a domain name already used under another parent, is a
    ``Conflict`` naming it.
    """
    state = _enum(NodeState, str(initial_state), "initial_state")
    if state not in IMPORT_STATES:
        raise ValidationFailed(
            f"initial_state must be one of: {', '.join(s.value for s in IMPORT_STATES)}",
            param="initial_state",
        )
    now = clock.now()
    planned = list(expand(spec))
    with db.transaction() as session:
        _settle_levels(session, spec.levels, now)
        domains_created = _add_domains(session, spec.levels, planned, now)
        _refuse_existing_hostnames(session, [p.hostname for p in planned])
        import_id = new_id("imp", at=now)
        nodes: list[dict[str, Any]] = []
        doms: list[dict[str, Any]] = []
        labels: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for p in planned:
            node_id = new_id("node", at=now)
            t = p.template
            nodes.append(
                {
                    "id": node_id,
                    "hostname": p.hostname,
                    "gpu_model": t.gpu_model,
                    "gpu_count": t.gpu_count,
                    "vcpus": t.vcpus,
                    "ram_gib": t.ram_gib,
                    "nvme_gib": t.nvme,
                    "topology": p.topology,
                    "state": state.value,
                    "state_reason": "imported",
                    "hold": False,
                    "resume_state": None,
                    "drain_requested_at": None,
                    "health": Health.HEALTHY.value,
                    "health_checks": {},
                    "labels": p.labels,
                    "bmc": p.bmc,
                    "capex_amount": t.capex,
                    "capex_currency": t.currency if t.capex is not None else None,
                    "book_life_years": t.book_life_years,
                    "in_service_at": _midnight(p.in_service),
                    "import_id": import_id,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            doms.extend(
                {"node_id": node_id, "level": lv, "name": nm} for lv, nm in p.topology.items()
            )
            labels.extend({"node_id": node_id, "key": k, "value": v} for k, v in p.labels.items())
            events.append(
                {
                    "id": new_id("evt", at=now),
                    "node_id": node_id,
                    "at": now,
                    "from_state": None,
                    "to_state": state.value,
                    "reason": f"imported ({import_id})",
                    "actor": actor,
                }
            )
        gpus = sum(int(n["gpu_count"]) for n in nodes)
        session.add(
            FleetImportRow(
                id=import_id,
                at=now,
                actor=actor,
                nodes_created=len(nodes),
                gpus_created=gpus,
                initial_state=state.value,
            )
        )
        for table, rows in (
            (NodeRow, nodes),
            (NodeDomainRow, doms),
            (NodeLabelRow, labels),
            (NodeEventRow, events),
        ):
            _bulk_insert(session, table, rows)
    return ImportResult(import_id, len(nodes), gpus, domains_created, state)


def _bulk_insert(session: Session, table: Any, rows: Sequence[dict[str, Any]]) -> None:
    for start in range(0, len(rows), 5000):
        session.execute(sa.insert(table.__table__), list(rows[start : start + 5000]))


def _midnight(day: date | None) -> datetime | None:
    return None if day is None else datetime(day.year, day.month, day.day, tzinfo=UTC)


def _settle_levels(session: Session, levels: list[str], now: datetime) -> None:
    row = session.get(FleetSettingsRow, 1, with_for_update=True)
    if row is None:
        session.add(FleetSettingsRow(id=1, levels=list(levels), updated_at=now))
        session.flush()
    elif list(row.levels) != list(levels):
        raise Conflict(
            f"the spec's levels {list(levels)} differ from the fleet's {list(row.levels)}",
            code="levels_mismatch",
            param="levels",
        )


def _add_domains(session: Session, levels: list[str], planned: Iterable[Any], now: datetime) -> int:
    wanted: dict[tuple[str, str], str] = {}
    for p in planned:
        path: list[str] = []
        for level in levels:
            name = p.topology[level]
            wanted.setdefault((level, name), "/".join(path))
            path.append(name)
    existing = {(d.level, d.name): d.parent_path for d in session.scalars(sa.select(DomainRow))}
    new = []
    for (level, name), parent in wanted.items():
        have = existing.get((level, name))
        if have is None:
            new.append({"level": level, "name": name, "parent_path": parent, "created_at": now})
        elif have != parent:
            raise Conflict(
                f"{level} {name!r} already exists under {have or '(root)'}, not under "
                f"{parent or '(root)'}; domain names are unique within their level",
                code="duplicate_domain",
                param=level,
            )
    _bulk_insert(session, DomainRow, new)
    return len(new)


def _refuse_existing_hostnames(session: Session, hostnames: list[str]) -> None:
    for start in range(0, len(hostnames), _CHUNK):
        chunk = hostnames[start : start + _CHUNK]
        taken = set(session.scalars(sa.select(NodeRow.hostname).where(NodeRow.hostname.in_(chunk))))
        if taken:
            first = next(h for h in chunk if h in taken)
            raise Conflict(
                f"a node with hostname {first!r} already exists ({len(taken)}+ duplicates); "
                "nothing was imported",
                code="duplicate_hostname",
                param="hostname",
                details={"hostname": first},
            )


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
        _change(session, node, step, clock.now(), reason, actor, drain=drain)
        return node


def _change(
    session: Session,
    node: NodeRow,
    step: Step,
    now: datetime,
    reason: str | None,
    actor: str,
    *,
    drain: bool = False,
) -> None:
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
        session.add(
            NodeEventRow(
                id=new_id("evt", at=now),
                node_id=node.id,
                at=now,
                from_state=move.before.value,
                to_state=move.after.value,
                reason=reason if moves else f"hold: {reason or ''}".strip(),
                actor=actor,
            )
        )


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
    target = _enum(NodeState, str(to), "to")
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
    now = clock.now()
    with db.transaction() as session:
        node = _node(session, node_id, lock=True)
        latest = dict(node.health_checks or {})
        for check in checks:
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
        node.health_checks = latest
        node.health = domain.aggregate_health(v["status"] for v in latest.values()).value
        node.updated_at = now
        if node.health == Health.FAILED.value:
            failing = [
                f"{n}: {v.get('message') or 'failed'}"
                for n, v in latest.items()
                if v["status"] == CheckStatus.FAIL.value
            ]
            _change(
                session, node, domain.fail, now, "health check failed: " + "; ".join(failing), actor
            )
        return node
