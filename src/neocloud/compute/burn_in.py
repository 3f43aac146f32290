"""Burn-in: new and repaired nodes prove themselves before a tenant gets them.

Each worker cycle (when ``ComputeConfig.burn_in`` is on): an ``enrolled`` node moves to
``burn_in``; a node in ``burn_in`` is powered on through the driver and, once the power step's
duration has passed, checked with the driver's ``health``. A node that passes becomes
``available`` (``cordoned`` if an operator holds it); one whose power step or health check
fails is recorded failed (a health check row with the driver's message) and goes to
``repair``, from where an operator sends it back to ``burn_in`` once fixed. Placement only
takes ``available`` nodes, so a node that did not pass never reaches a tenant.

With the node agent on (``AgentBurnIn``, ``NEOCLOUD_AGENT_INSTALL``) and a driver that installs
it (``ssh``), a node whose health check passed gets a new agent token and the agent installed
and started by the driver; it becomes ``available`` only once the agent's first heartbeat with
an inventory arrived (the heartbeat's rules fail a node whose GPUs are not what it was
registered as, or are unhealthy: such a node goes to ``repair`` with that reason). An agent that
does not report within ``report_timeout_s`` fails the burn-in with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

import sqlalchemy as sa

from neocloud.compute.nodes import lock_node, move_node
from neocloud.compute.reconciler import node_ref
from neocloud.compute.tables import NodeWorkRow
from neocloud.db.engine import Database
from neocloud.drivers.base import Driver, Drivers, HealthResult, NodeRef, StepResult
from neocloud.fleet import service as fleet_service
from neocloud.fleet.agent import issue_agent_token
from neocloud.fleet.domain import CheckStatus, NodeRole, NodeState
from neocloud.fleet.service import CheckResult
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.clock import Clock

STEP = "burn_in"
AGENT_STEP = "burn_in_agent"  # waiting for the agent's first heartbeat
STEPS = (STEP, AGENT_STEP)
NS = NodeState
ACTOR = "burn-in"


@dataclass(frozen=True)
class AgentBurnIn:
    """Install the node agent at burn-in: where agents report (``NEOCLOUD_PUBLIC_URL``) and how
    long burn-in waits for a new agent's first heartbeat."""

    control_plane_url: str
    report_timeout_s: float = 120.0


@runtime_checkable
class AgentInstaller(Protocol):
    """A driver that can install and start the agent on its nodes (``ssh``)."""

    @property
    def installs_agent(self) -> bool: ...

    def install_agent(
        self, node: NodeRef, *, control_plane_url: str, token: str, recorded: str | None
    ) -> StepResult: ...


@dataclass
class BurnInReport:
    started: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def run_burn_in(
    *, db: Database, clock: Clock, driver: Driver | Drivers, agent: AgentBurnIn | None = None
) -> BurnInReport:
    """One pass over enrolled and burning-in nodes (see the module docstring); each node is
    checked by the driver it names; ``agent``: install the node agent and wait for it."""
    drivers = Drivers.of(driver)
    report = BurnInReport()
    now = clock.now()
    with db.transaction() as s:
        # A node whose agent's first heartbeats failed it (its GPUs are not what it was
        # registered as, or unhealthy) failed its burn-in: to repair, with that reason.
        failed_waiting = list(
            s.scalars(
                sa.select(NodeWorkRow.node_id)
                .join(NodeRow, NodeRow.id == NodeWorkRow.node_id)
                .where(NodeWorkRow.step == AGENT_STEP, NodeRow.state == NS.FAILED.value)
            )
        )
        for node_id in failed_waiting:
            failed = lock_node(s, node_id)
            if failed is not None and failed.state == NS.FAILED.value:
                why = f"burn-in failed: {failed.state_reason or 'the agent failed the node'}"
                move_node(s, failed, NS.REPAIR, now, why[:500])
                report.failed.append(node_id)
        # A burn-in an operator cut short (a node moved out of burn-in by hand) is forgotten,
        # so that the node's next burn-in starts from the power step.
        s.execute(
            sa.delete(NodeWorkRow)
            .where(
                NodeWorkRow.step.in_(STEPS),
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
        if w is not None and w.step not in STEPS:
            continue  # some other step of the node is under way
        if w is None:
            _start(db, drivers, node, now, report)
        elif w.step == AGENT_STEP:
            _await_agent(db, clock, node, w, report)
        elif w.due_at is None or w.due_at <= now:
            _check(db, clock, drivers, node, report, agent)
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
    db: Database,
    clock: Clock,
    drivers: Drivers,
    node: NodeRow,
    report: BurnInReport,
    agent: AgentBurnIn | None,
) -> None:
    now = clock.now()
    ref = node_ref(node)
    try:
        driver = drivers.for_node(ref)
        health = driver.health(ref)
    except Exception as exc:  # an unknown driver, or a driver's bug: the node does not pass
        health = HealthResult(False, {}, f"driver error: {type(exc).__name__}: {exc}")
    checks = [
        CheckResult(f"burn_in.{name}", _status(value), None if health.ok else health.message)
        for name, value in sorted(health.checks.items())
    ]
    if not health.ok and not any(c.status is CheckStatus.FAIL for c in checks):
        checks.append(CheckResult("burn_in", CheckStatus.FAIL, health.message or "failed"))
    if not health.ok:
        fleet_service.report_health(db=db, clock=clock, node_id=node.id, checks=checks, actor=ACTOR)
        _fail(db, node.id, now, health.message or "health check failed", report)
        return
    if (node.role or NodeRole.GPU.value) != NodeRole.GPU.value:
        # A storage or service node has no GPUs: say that their check was skipped, and why.
        checks = [c for c in checks if c.name != "burn_in.gpu"]
        checks.append(
            CheckResult(
                "burn_in.gpu",
                CheckStatus.PASS,
                f"skipped: a {node.role} node has no GPUs (never rented to a tenant)",
            )
        )
    # Passing burn-in clears what failed before (the reason the node went to repair).
    for name, latest in sorted((node.health_checks or {}).items()):
        if isinstance(latest, dict) and latest.get("status") == CheckStatus.FAIL.value:
            checks.append(CheckResult(name, CheckStatus.PASS, "cleared by burn-in"))
    if checks:
        fleet_service.report_health(db=db, clock=clock, node_id=node.id, checks=checks, actor=ACTOR)
    if agent is not None and isinstance(driver, AgentInstaller) and driver.installs_agent:
        _install_agent(db, clock, driver, ref, agent, report)
        return
    with db.transaction() as s:
        s.execute(sa.delete(NodeWorkRow).where(NodeWorkRow.node_id == node.id))
        locked = lock_node(s, node.id)
        if locked is None or locked.state != NS.BURN_IN.value:
            return
        move_node(s, locked, NS.AVAILABLE, now, "burn-in passed")
    report.passed.append(node.id)


def _install_agent(
    db: Database,
    clock: Clock,
    driver: AgentInstaller,
    ref: NodeRef,
    agent: AgentBurnIn,
    report: BurnInReport,
) -> None:
    """A new token (the old one stops working), the agent installed and (re)started by the
    driver, then wait for its first heartbeat (``_await_agent``)."""
    started = clock.now()
    token = issue_agent_token(db=db, clock=clock, node_id=ref.id, actor=ACTOR).token
    recorded = ref.config.get("agent_recorded")
    try:
        result = driver.install_agent(
            ref,
            control_plane_url=agent.control_plane_url,
            token=token,
            recorded=recorded if isinstance(recorded, str) else None,
        )
    except Exception as exc:  # a driver's bug: the node does not pass (no token in the text)
        result = StepResult(False, message=f"install agent: driver error: {type(exc).__name__}")
    del token
    if not result.ok:
        why = result.message or "installing the agent failed"
        fleet_service.report_health(
            db=db,
            clock=clock,
            node_id=ref.id,
            checks=[CheckResult("burn_in.agent", CheckStatus.FAIL, why)],
            actor=ACTOR,
        )
        _fail(db, ref.id, clock.now(), why, report)
        return
    with db.transaction() as s:
        locked = lock_node(s, ref.id)
        if locked is None or locked.state != NS.BURN_IN.value:
            return
        s.merge(
            NodeWorkRow(
                node_id=ref.id,
                step=AGENT_STEP,
                started_at=started,
                due_at=started + timedelta(seconds=agent.report_timeout_s),
            )
        )


def _await_agent(
    db: Database, clock: Clock, node: NodeRow, work: NodeWorkRow, report: BurnInReport
) -> None:
    """Pass the node once its agent sent an inventory since the install; fail it when the
    agent stayed silent past the deadline. (A heartbeat whose rules failed the node already
    moved it to ``failed``: ``run_burn_in`` sends it to repair.)"""
    now = clock.now()
    if node.inventory_at is not None and node.inventory_at >= work.started_at:
        with db.transaction() as s:
            s.execute(sa.delete(NodeWorkRow).where(NodeWorkRow.node_id == node.id))
            locked = lock_node(s, node.id)
            if locked is None or locked.state != NS.BURN_IN.value:
                return
            move_node(s, locked, NS.AVAILABLE, now, "burn-in passed; the agent reports")
        report.passed.append(node.id)
        return
    if work.due_at is None or work.due_at > now:
        return
    waited = (work.due_at - work.started_at).total_seconds()
    seen = (
        "it never sent a heartbeat"
        if node.agent_seen_at is None or node.agent_seen_at < work.started_at
        else "it sent heartbeats without an inventory"
    )
    why = (
        f"the agent did not report within {waited:g} s of its start ({seen}; see"
        f" /var/log/neocloud-agent.log or `journalctl -u neocloud-agent` on the node)"
    )
    fleet_service.report_health(
        db=db,
        clock=clock,
        node_id=node.id,
        checks=[CheckResult("burn_in.agent", CheckStatus.FAIL, why)],
        actor=ACTOR,
    )
    _fail(db, node.id, now, why, report)


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
