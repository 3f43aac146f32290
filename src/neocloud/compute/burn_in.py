"""Burn-in: new and repaired nodes prove themselves before a tenant gets them.

Each worker cycle (when ``ComputeConfig.burn_in`` is on): an ``enrolled`` node moves to
``burn_in``; a node in ``burn_in`` is powered on through the driver and, once the power step's
duration has passed, checked with the driver's ``health``. A node that passes becomes
``available`` (``cordoned`` if an operator holds it); one whose power step or health check
fails is recorded failed (a health check row with the driver's message) and goes to
``repair``, from where an operator sends it back to ``burn_in`` once fixed. Placement only
takes ``available`` nodes, so a node that did not pass never reaches a tenant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from neocloud.compute.nodes import lock_node, move_node
from neocloud.compute.reconciler import node_ref
from neocloud.compute.tables import NodeWorkRow
from neocloud.db.engine import Database
from neocloud.drivers.base import Driver, Drivers, HealthResult, StepResult
from neocloud.fleet import service as fleet_service
from neocloud.fleet.domain import CheckStatus, NodeState
from neocloud.fleet.service import CheckResult
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.clock import Clock

STEP = "burn_in"
NS = NodeState


@dataclass
class BurnInReport:
    started: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def run_burn_in(*, db: Database, clock: Clock, driver: Driver | Drivers) -> BurnInReport:
    """One pass over enrolled and burning-in nodes (see the module docstring); each node is
    checked by the driver it names."""
    drivers = Drivers.of(driver)
    report = BurnInReport()
    now = clock.now()
    with db.transaction() as s:
        # A burn-in an operator cut short (a node moved out of burn-in by hand) is forgotten,
        # so that the node's next burn-in starts from the power step.
        s.execute(
            sa.delete(NodeWorkRow)
            .where(
                NodeWorkRow.step == STEP,
                NodeWorkRow.node_id.in_(
                    sa.select(NodeRow.id).where(
                        NodeRow.state.not_in([NS.ENROLLED.value, NS.BURN_IN.value])
                    )
                ),
            )
            .execution_options(synchronize_session=False)
        )
        nodes = list(
            s.scalars(
                sa.select(NodeRow)
                .where(NodeRow.state.in_([NS.ENROLLED.value, NS.BURN_IN.value]))
                .order_by(NodeRow.id)
            )
        )
        if not nodes:
            return report
        work = {
            w.node_id: w
            for w in s.scalars(
                sa.select(NodeWorkRow).where(NodeWorkRow.node_id.in_([n.id for n in nodes]))
            )
        }
    for node in nodes:
        w = work.get(node.id)
        if w is not None and w.step != STEP:
            continue  # some other step of the node is under way
        if w is None:
            _start(db, drivers, node, now, report)
        elif w.due_at is None or w.due_at <= now:
            _check(db, clock, drivers, node, report)
    return report


def _start(
    db: Database, drivers: Drivers, node: NodeRow, now: datetime, report: BurnInReport
) -> None:
    ref = node_ref(node)
    try:
        power = drivers.for_node(ref).power(ref, on=True)
    except Exception as exc:  # an unknown driver, or a driver's bug: the node does not pass
        power = StepResult(False, message=f"driver error: {type(exc).__name__}: {exc}")
    if not power.ok:
        _fail(db, node.id, now, power.message or "power on failed", report)
        return
    with db.transaction() as s:
        locked = lock_node(s, node.id)
        if locked is None or locked.state not in (NS.ENROLLED.value, NS.BURN_IN.value):
            return
        if locked.state == NS.ENROLLED.value:
            move_node(s, locked, NS.BURN_IN, now, "burn-in started")
        s.merge(
            NodeWorkRow(
                node_id=node.id,
                step=STEP,
                started_at=now,
                due_at=now + timedelta(seconds=power.duration_s),
            )
        )
    report.started.append(node.id)


def _check(
    db: Database, clock: Clock, drivers: Drivers, node: NodeRow, report: BurnInReport
) -> None:
    now = clock.now()
    ref = node_ref(node)
    try:
        health = drivers.for_node(ref).health(ref)
    except Exception as exc:  # an unknown driver, or a driver's bug: the node does not pass
        health = HealthResult(False, {}, f"driver error: {type(exc).__name__}: {exc}")
    checks = [
        CheckResult(f"burn_in.{name}", _status(value), None if health.ok else health.message)
        for name, value in sorted(health.checks.items())
    ]
    if not health.ok and not any(c.status is CheckStatus.FAIL for c in checks):
        checks.append(CheckResult("burn_in", CheckStatus.FAIL, health.message or "failed"))
    if not health.ok:
        fleet_service.report_health(
            db=db, clock=clock, node_id=node.id, checks=checks, actor="burn-in"
        )
        _fail(db, node.id, now, health.message or "health check failed", report)
        return
    # Passing burn-in clears what failed before (the reason the node went to repair).
    for name, latest in sorted((node.health_checks or {}).items()):
        if isinstance(latest, dict) and latest.get("status") == CheckStatus.FAIL.value:
            checks.append(CheckResult(name, CheckStatus.PASS, "cleared by burn-in"))
    if checks:
        fleet_service.report_health(
            db=db, clock=clock, node_id=node.id, checks=checks, actor="burn-in"
        )
    with db.transaction() as s:
        s.execute(sa.delete(NodeWorkRow).where(NodeWorkRow.node_id == node.id))
        locked = lock_node(s, node.id)
        if locked is None or locked.state != NS.BURN_IN.value:
            return
        move_node(s, locked, NS.AVAILABLE, now, "burn-in passed")
    report.passed.append(node.id)


def _status(value: str) -> CheckStatus:
    try:
        return CheckStatus(value)
    except ValueError:
        return CheckStatus.FAIL


def _fail(db: Database, node_id: str, now: datetime, why: str, report: BurnInReport) -> None:
    """The node did not pass: failed (if the health report did not already say so), then
    repair; its burn-in work is dropped so that a later burn-in starts afresh."""
    with db.transaction() as s:
        s.execute(sa.delete(NodeWorkRow).where(NodeWorkRow.node_id == node_id))
        node = lock_node(s, node_id)
        if node is None or node.state == NS.RETIRED.value:
            return
        if node.state != NS.FAILED.value:
            move_node(s, node, NS.FAILED, now, f"burn-in failed: {why}")
        move_node(s, node, NS.REPAIR, now, f"burn-in failed: {why}")
    report.failed.append(node_id)
