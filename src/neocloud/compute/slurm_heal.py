"""Healing managed Slurm the SUNK way: a lost member is drained, its replacement joins.

While a cluster's Slurm is ``ready``, the compute worker's Slurm step (``compute/slurm.py``)
asks ``decide_heal`` (pure) what the members' states need:

- **drain**: a member Slurm knows is lost (its node failed: the agent's or an operator's
  failing check; or it is asked to stop: an operator's drain, a reservation's end). On the
  controller ``scontrol update NodeName=… State=DRAIN Reason=…`` (``sinfo -R`` shows it),
  then Slurm comes off the lost member (daemons, munge key, files; a failure sends its node
  to repair), and the member is released: only now may the reconciler stop it
  (``InstanceRow.scheduler_released_at``).
- **join**: every member runs again and some are new to Slurm (the scheduler booked them from
  the nearest domain). Every member is probed as at configure; ``slurm.conf``, ``gres.conf``
  and ``topology.conf`` are written with the new set; ``slurmctld`` restarts (Slurm 22.05
  reads added or removed nodes only at a restart; it recovers its jobs from its state
  directory), ``slurmd`` restarts on the members that stay (their job steps live on in
  ``slurmstepd``), the new member gets munged with the cluster's key (kept sealed with the
  platform's ``SecretBox``: rotating it would cut running jobs' steps off ``slurmd``) and its
  ``slurmd``; done when ``sinfo`` shows every node in service.
- **fail**: the controller itself is lost: Slurm comes off every member and the scheduler is
  ``failed`` with the reason (the controller's state, its jobs, is on the lost node).

Every step is a ``scheduler`` event of the cluster. See docs/slurm.md.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.compute import slurm_conf as conf
from neocloud.compute.clusters import SchedulerState
from neocloud.compute.domain import InstanceState
from neocloud.compute.lifecycle import record_event
from neocloud.compute.slurm_members import (
    SlurmTimeouts,
    StepFailed,
    Target,
    check_results,
    each,
    executor,
    live_members,
    probe_members,
    render_files,
    repair,
    tail,
    target_of,
    topology_for,
    wait_serving,
)
from neocloud.compute.tables import ClusterRow, InstanceRow
from neocloud.db.engine import Database
from neocloud.drivers.base import Drivers, Executor
from neocloud.fleet.domain import NodeState
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.clock import Clock
from neocloud.kernel.secrets import SealedSecretError, SecretBox

JOIN_RETRY_S = 60  # a join that failed is tried again after this many seconds


class HealAction(StrEnum):
    NONE = "none"
    DRAIN = "drain"
    JOIN = "join"
    FAIL = "fail"


@dataclass(frozen=True)
class MemberFacts:
    """One member instance of the cluster as ``decide_heal`` needs it."""

    instance_id: str
    running: bool  # running on a node
    stopping: bool  # a stop is asked for (now or after a notice)
    has_address: bool


@dataclass(frozen=True)
class HealPlan:
    action: HealAction
    members: tuple[str, ...] = ()  # the instances to drain, or the new ones to join


def decide_heal(
    nodes: dict[str, dict[str, object]],
    controller: str | None,
    facts: Sequence[MemberFacts],
    node_count: int,
) -> HealPlan:
    """What a ``ready`` Slurm needs now (pure). ``nodes``: Slurm's nodes as configured
    ({instance id: {"name", "drained"}}); a lost controller fails, a lost member is drained,
    and once every member runs with an address and none is stopping, members new to Slurm
    join."""
    live = {f.instance_id: f for f in facts if f.running}
    in_service = [i for i, n in nodes.items() if not n.get("drained")]
    lost = tuple(sorted(i for i in in_service if i not in live or live[i].stopping))
    if controller is not None and controller in lost:
        return HealPlan(HealAction.FAIL, (controller,))
    if lost:
        return HealPlan(HealAction.DRAIN, lost)
    new = tuple(sorted(i for i in live if i not in nodes))
    settled = all(not f.stopping and f.has_address for f in live.values())
    if new and settled and len(live) == node_count:
        return HealPlan(HealAction.JOIN, new)
    return HealPlan(HealAction.NONE)


def member_facts(s: Session, cluster_id: str) -> list[MemberFacts]:
    rows = s.scalars(sa.select(InstanceRow).where(InstanceRow.cluster_id == cluster_id))
    return [
        MemberFacts(
            r.id,
            r.state == InstanceState.RUNNING.value and r.node_id is not None,
            r.stop_at is not None,
            bool((r.access or {}).get("host")),
        )
        for r in rows
    ]


def lost_reason(row: InstanceRow, node: NodeRow | None) -> str:
    """Why a member is lost, in words (Slurm's drain reason)."""
    if node is not None and node.state in (NodeState.FAILED.value, NodeState.REPAIR.value):
        return f"node failed: {node.state_reason or row.state_message or 'no reason given'}"
    if row.stop_at is not None and row.state == InstanceState.RUNNING.value:
        return f"member stops ({row.stop_reason or 'user'})"
    return f"member {row.state} ({row.state_reason or 'no reason given'})"


@dataclass(frozen=True)
class Lost:
    target: Target
    reason: str


def seal_key(box: SecretBox, key: bytes) -> str:
    return box.seal({"munge_key": base64.b64encode(key).decode("ascii")})


def open_key(box: SecretBox, sealed: str | None) -> bytes:
    """The cluster's munge key; ``StepFailed`` when none is kept or it cannot be opened."""
    if not sealed:
        raise StepFailed("the cluster's munge key is not kept: a new member cannot join")
    try:
        return base64.b64decode(str(box.open(sealed)["munge_key"]))
    except (SealedSecretError, KeyError, ValueError):
        raise StepFailed(
            "the cluster's munge key cannot be opened with this platform's secret key"
        ) from None


class SlurmHealer:
    """The drain and join steps (each run in the Slurm step's thread, under its lease)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        drivers: Drivers,
        box: SecretBox,
        timeouts: SlurmTimeouts,
    ) -> None:
        self.db, self.clock, self.drivers, self.box = db, clock, drivers, box
        self.timeouts = timeouts

    # -- drain --------------------------------------------------------------------------------

    def drain(self, cluster_id: str, ids: Sequence[str]) -> None:
        with self.db.transaction() as s:
            c = s.get(ClusterRow, cluster_id)
            if c is None:
                return
            controller = next(
                (m for m in live_members(s, cluster_id) if m.instance_id == c.scheduler_controller),
                None,
            )
            lost = lost_members(s, ids)
        drains = [self._drain_one(controller, m) for m in lost]  # before Slurm comes off it
        removals = each(self._remove_from, [m.target for m in lost])
        results = {
            m.target.instance_id: (drained, removal_failure(m.target.name, *removed))
            for m, drained, removed in zip(lost, drains, removals, strict=True)
        }
        now = self.clock.now()
        with self.db.transaction() as s:
            c = s.get(ClusterRow, cluster_id)
            if c is not None:
                apply_drain(s, c, lost, results, now)

    def _drain_one(self, controller: Target | None, m: Lost) -> str | None:
        """Drain ``m`` on the controller; answers what went wrong (None: drained)."""
        if controller is None or controller.simulated:
            return None
        try:
            run = executor(self.drivers, controller)
        except StepFailed as exc:
            return str(exc)
        status, out = run.run_root(
            controller.node,
            conf.drain_script(node=m.target.name, reason=m.reason),
            timeout_s=self.timeouts.probe_s,
        )
        return None if status == 0 else f"scontrol update failed (exit {status}): {tail(out)}"

    def _remove_from(self, m: Target) -> tuple[int, str]:
        """Slurm off one lost member: (0, "") when removed, else the status and output."""
        if m.simulated:
            return 0, ""
        driver = self.drivers.for_node(m.node)
        if not isinstance(driver, Executor):
            return 0, ""
        return driver.run_root(m.node, conf.TEARDOWN, timeout_s=self.timeouts.teardown_s)

    # -- join ---------------------------------------------------------------------------------

    def join(self, cluster_id: str, ids: Sequence[str]) -> None:
        started = time.monotonic()
        with self.db.transaction() as s:
            c = s.get(ClusterRow, cluster_id)
            if c is None:
                return
            members = sorted(
                live_members(s, cluster_id), key=lambda m: m.instance_id != c.scheduler_controller
            )
            topology = topology_for(s, c, members)
            title, sealed = c.name or c.id, c.scheduler_key
        new = [m for m in members if m.instance_id in ids]
        try:
            key = b"" if all(m.simulated for m in members) else open_key(self.box, sealed)
            if key:
                self._join(members, new, key, title, topology)
        except StepFailed as exc:
            each(self._remove_from, new)  # a half-joined member keeps nothing
            self._finish_join(cluster_id, members, new, failed=str(exc), took=0.0)
            return
        self._finish_join(cluster_id, members, new, failed=None, took=time.monotonic() - started)

    def _join(
        self,
        members: Sequence[Target],
        new: Sequence[Target],
        key: bytes,
        title: str,
        topology: str,
    ) -> None:
        hardware = probe_members(self.drivers, members, self.timeouts)
        files = render_files(title, members, hardware, topology)
        controller = members[0]
        ctld = executor(self.drivers, controller).run_root(
            controller.node,
            conf.rejoin_script(node=controller.name, controller=True, files=files),
            timeout_s=self.timeouts.install_s,
        )
        check_results([controller], [ctld])
        joining = {m.instance_id for m in new}

        def start(m: Target) -> tuple[int, str]:
            run = executor(self.drivers, m)
            if m.instance_id in joining:
                script = conf.install_script(
                    node=conf.SlurmNode(m.name, m.address, hardware[m.instance_id]),
                    controller=False,
                    files=files,
                )
                return run.run_root(m.node, script, timeout_s=self.timeouts.install_s, stdin=key)
            script = conf.rejoin_script(node=m.name, controller=False, files=files)
            return run.run_root(m.node, script, timeout_s=self.timeouts.install_s)

        check_results(members, each(start, members))
        wait_serving(self.drivers, controller, len(members), self.timeouts, conf.SERVING_STATES)

    def _finish_join(
        self,
        cluster_id: str,
        members: Sequence[Target],
        new: Sequence[Target],
        *,
        failed: str | None,
        took: float,
    ) -> None:
        now = self.clock.now()
        names = ", ".join(m.name for m in new)
        with self.db.transaction() as s:
            c = s.get(ClusterRow, cluster_id)
            if c is None or c.scheduler_state != SchedulerState.READY.value:
                return  # terminated meanwhile: the teardown step takes over
            if failed is not None:
                c.scheduler_lease_until = now + timedelta(seconds=JOIN_RETRY_S)
                event(
                    s, c, now, f"joining {names} failed (tried again in {JOIN_RETRY_S} s): {failed}"
                )
                c.scheduler_reason = f"joining {names} failed, tried again: {failed}"[:1000]
                return
            finish_join(s, c, members, new, now, took=took)


def finish_join(
    s: Session,
    c: ClusterRow,
    members: Sequence[Target],
    new: Sequence[Target],
    now: datetime,
    *,
    took: float,
) -> None:
    """``new`` joined: Slurm's nodes are ``members`` now; the event says how long it took."""
    c.scheduler_lease_until = None
    c.scheduler_nodes = {m.instance_id: {"name": m.name, "drained": False} for m in members}
    names = ", ".join(m.name for m in new)
    message = f"{names} joined in {took:.1f} s: {len(members)} nodes in service"
    event(s, c, now, message)
    c.scheduler_reason = message


def lost_members(s: Session, ids: Sequence[str]) -> list[Lost]:
    out = []
    for row in s.scalars(sa.select(InstanceRow).where(InstanceRow.id.in_(list(ids)))):
        node = s.get(NodeRow, row.node_id) if row.node_id else None
        if node is None:
            continue
        out.append(Lost(target_of(row, node), lost_reason(row, node)))
    return out


def apply_drain(
    s: Session,
    c: ClusterRow,
    lost: Sequence[Lost],
    results: Mapping[str, tuple[str | None, str | None]],
    now: datetime,
) -> None:
    """Record the drain of ``lost`` (``results``: {instance id: (drain failure, removal
    failure)}); each lost member is released; one whose removal failed goes to repair."""
    c.scheduler_lease_until = None
    if c.scheduler_state != SchedulerState.READY.value:
        return  # terminated meanwhile: the teardown step takes over
    nodes = dict(c.scheduler_nodes or {})
    for m in lost:
        t = m.target
        drain_failed, removal_failed = results.get(t.instance_id, (None, None))
        nodes[t.instance_id] = {"name": t.name, "drained": True}
        if drain_failed is None:
            event(s, c, now, f"drained {t.name}: {m.reason}", node_id=t.node.id)
        else:
            event(s, c, now, f"draining {t.name} failed ({m.reason}): {drain_failed}")
        row = s.get(InstanceRow, t.instance_id)
        if row is not None:
            row.scheduler_released_at = now
        if removal_failed is None:
            event(s, c, now, f"Slurm removed from {t.name}; it is released", node_id=t.node.id)
        else:
            repair(s, t.node.id, now, removal_failed)
            event(s, c, now, f"{removal_failed}: its node went to repair", node_id=t.node.id)
    c.scheduler_nodes = nodes
    serving = sum(1 for n in nodes.values() if not n.get("drained"))
    gone = ", ".join(f"{m.target.name} ({m.reason})" for m in lost)
    c.scheduler_reason = (
        f"{serving} of {c.node_count} nodes in service; drained {gone}; waiting for the replacement"
    )[:1000]


def removal_failure(name: str, status: int, out: str) -> str | None:
    """What a teardown's exit status says went wrong on ``name`` (None: removed)."""
    if status == 0:
        return None
    if status == conf.TEARDOWN_RUNNING:
        return f"Slurm daemons still run on {name}: {tail(out)}"
    if status == conf.TEARDOWN_FILES:
        return f"{tail(out)} is still on {name}"
    return f"removing Slurm from {name} failed: {tail(out)}"


def event(
    s: Session, c: ClusterRow, now: datetime, message: str, node_id: str | None = None
) -> None:
    """A ``scheduler`` event of the cluster that moves no state (``slurm heal: …``)."""
    c.updated_at = now
    record_event(
        s,
        subject_id=c.id,
        org_id=c.org_id,
        now=now,
        kind="scheduler",
        to_state=c.scheduler_state,
        message=f"slurm heal: {message}"[:1000],
        node_id=node_id,
    )
