"""Managed Slurm on a cluster's members: configured when they all run, removed before they stop.

A cluster created with ``"scheduler": {"type": "slurm"}`` starts with its scheduler
``configuring``. Once every member runs with access, the compute worker (``SlurmSteps``, one
call per cycle) configures Slurm through the members' drivers (``drivers.base.Executor``) in a
background thread, so a slow server never holds the worker's cycle:

1. probe every member: Slurm and munge installed, ``slurmd -C``'s CPUs and memory, GPU device
   files, the tenant login's uid (it must be the same on every member: Slurm runs a job as one
   uid everywhere);
2. a fresh munge key for this cluster (128 random bytes: handed to each member on the script's
   standard input, written 0400 ``munge:munge``, kept only sealed with the platform's
   ``SecretBox`` for a replacement to join with, never logged or returned), ``slurm.conf``
   with each member as ``NodeName`` = its tenant hostname and ``NodeAddr`` = its address,
   ``gres.conf``, ``topology.conf`` from ``topology_export``'s tree form, ``slurmctld`` on
   the first member, ``slurmd`` on all (systemd where it is PID 1, else started directly);
3. wait until ``sinfo`` shows every node idle → ``ready`` (the controller and its login
   command in the cluster's answer), or ``failed`` with the reason, after removing what was
   written, so nothing is left half-configured.

A lost member is drained and its replacement joined while Slurm stays ready
(``compute/slurm_heal.py``). Terminating such a cluster first removes Slurm from every member
(``removing``: daemons stopped, key, configuration and state gone, checked), then stops the
members. A member where
that fails goes to repair. On simulated nodes nothing runs: the scheduler is ``ready`` and says
``simulated``. Every step is bounded by ``SlurmTimeouts``; a lease on the cluster row keeps two
workers from running one step twice. See docs/slurm.md.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.compute import slurm_conf as conf
from neocloud.compute.access import ssh_command
from neocloud.compute.clusters import SchedulerState
from neocloud.compute.domain import CLUSTER_FINAL, ClusterState, InstanceState, Reason
from neocloud.compute.lifecycle import stop_members
from neocloud.compute.reconciler import workload_hostname
from neocloud.compute.slurm_heal import (
    HealAction,
    SlurmHealer,
    apply_drain,
    decide_heal,
    finish_join,
    lost_members,
    member_facts,
    removal_failure,
    seal_key,
)
from neocloud.compute.slurm_members import (
    SlurmTimeouts,
    StepFailed,
    Target,
    each,
    install_members,
    live_members,
    probe_members,
    render_files,
    repair,
    set_scheduler,
    topology_for,
    wait_serving,
)
from neocloud.compute.tables import ClusterRow, InstanceRow
from neocloud.db.engine import Database
from neocloud.drivers.base import Drivers, Executor
from neocloud.kernel.clock import Clock
from neocloud.kernel.secrets import SecretBox

log = logging.getLogger(__name__)
MUNGE_KEY_BYTES = 128
Step = Callable[[str], None]


class SlurmSteps:
    """The compute worker's Slurm step (see the module docstring); ``run_once`` is cheap: it
    reads which clusters need a step and starts it in a thread. ``box`` seals the clusters'
    munge keys (the platform's; without one, a box of this process only: a restarted
    process cannot join a replacement to a cluster configured before)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        drivers: Drivers,
        timeouts: SlurmTimeouts | None = None,
        box: SecretBox | None = None,
    ) -> None:
        self.db, self.clock, self.drivers = db, clock, drivers
        self.timeouts = timeouts or SlurmTimeouts()
        self.box = box or SecretBox(SecretBox.new_key())
        self.healer = SlurmHealer(db, clock, drivers, self.box, self.timeouts)
        self.running: dict[str, threading.Thread] = {}  # cluster id -> its step

    def wait(self, timeout_s: float = 600) -> None:
        """Wait for the steps in flight (tests)."""
        for thread in list(self.running.values()):
            thread.join(timeout_s)

    def run_once(self) -> int:
        """Start the steps due now; answer how many started or were applied at once."""
        self.running = {k: t for k, t in self.running.items() if t.is_alive()}
        now = self.clock.now()
        started: list[tuple[str, Step]] = []
        with self.db.transaction() as s:
            rows = list(
                s.scalars(
                    sa.select(ClusterRow).where(
                        ClusterRow.scheduler_state.in_(
                            [
                                SchedulerState.CONFIGURING.value,
                                SchedulerState.READY.value,
                                SchedulerState.REMOVING.value,
                            ]
                        )
                    )
                )
            )
            for c in rows:
                if c.id in self.running or (
                    c.scheduler_lease_until is not None and c.scheduler_lease_until > now
                ):
                    continue
                step = self._due(s, c, now)
                if step is not None:
                    c.scheduler_lease_until = now + timedelta(seconds=self.timeouts.lease_s)
                    started.append((c.id, step))
        for cluster_id, step in started:
            thread = threading.Thread(
                target=self._guarded, args=(step, cluster_id), name="slurm", daemon=True
            )
            self.running[cluster_id] = thread
            thread.start()
        return len(started)

    def _due(self, s: Session, c: ClusterRow, now: datetime) -> Step | None:
        """The threaded step ``c`` needs now, if any; quick moves are applied here."""
        members = live_members(s, c.id)
        if c.scheduler_state == SchedulerState.READY.value:
            return self._heal_due(s, c, members, now)
        if c.scheduler_state == SchedulerState.REMOVING.value:
            if members and all(m.simulated for m in members):
                finish_teardown(s, c, now, failures={})
                return None
            return self.teardown
        if ClusterState(c.state) in CLUSTER_FINAL | {ClusterState.STOPPING}:
            set_scheduler(
                s, c, now, SchedulerState.FAILED, f"the cluster is {c.state}: Slurm was not set up"
            )
            return None
        if c.state != ClusterState.RUNNING.value or member_leaving(s, c, members) is not None:
            return None
        if any(not m.address for m in members):
            return None
        if all(m.simulated for m in members):
            c.scheduler_controller = members[0].instance_id
            c.scheduler_simulated = True
            c.scheduler_ready_at = now
            c.scheduler_nodes = configured(members)
            set_scheduler(
                s,
                c,
                now,
                SchedulerState.READY,
                "simulated nodes: no Slurm daemons run (the state is what a real cluster's"
                " would be)",
            )
            return None
        return self.configure

    def _heal_due(
        self, s: Session, c: ClusterRow, members: Sequence[Target], now: datetime
    ) -> Step | None:
        """A ready Slurm whose members changed: drain the lost, join the new, or (the
        controller lost) take Slurm off every member (``compute/slurm_heal.py``)."""
        plan = decide_heal(
            dict(c.scheduler_nodes or {}),
            c.scheduler_controller,
            member_facts(s, c.id),
            c.node_count,
        )
        simulated = bool(members) and all(m.simulated for m in members)
        if plan.action is HealAction.FAIL:
            found = lost_members(s, plan.members)
            name, why = (found[0].target.name, found[0].reason) if found else (plan.members[0], "")
            c.scheduler_state = SchedulerState.REMOVING.value
            c.scheduler_reason = (
                f"the controller {name} is lost ({why or 'no reason given'}): removing Slurm"
                " from every member"
            )
            if simulated:
                finish_teardown(s, c, now, failures={})
                return None
            return self.teardown
        if plan.action is HealAction.DRAIN:
            if simulated:
                lost = lost_members(s, plan.members)
                results = {m.target.instance_id: (None, None) for m in lost}
                apply_drain(s, c, lost, results, now)
                return None
            return partial(self.healer.drain, ids=plan.members)
        if plan.action is HealAction.JOIN:
            if simulated:
                joined = [m for m in members if m.instance_id in plan.members]
                finish_join(s, c, members, joined, now, took=0.0)
                return None
            return partial(self.healer.join, ids=plan.members)
        return None

    def _guarded(self, step: Step, cluster_id: str) -> None:
        try:
            step(cluster_id)
        except Exception:  # keep the worker alive; the lease lets a later cycle retry
            log.exception("slurm step on cluster %s failed", cluster_id)

    # -- configure ----------------------------------------------------------------------------

    def configure(self, cluster_id: str) -> None:
        started = time.monotonic()
        with self.db.transaction() as s:
            c = s.get(ClusterRow, cluster_id)
            if c is None:
                return
            members = live_members(s, cluster_id)
            topology = topology_for(s, c, members)
            title = c.name or c.id
        key = secrets.token_bytes(MUNGE_KEY_BYTES)
        try:
            hardware = probe_members(self.drivers, members, self.timeouts)
            files = render_files(title, members, hardware, topology)
            install_members(
                self.drivers,
                members,
                hardware=hardware,
                files=files,
                key=key,
                controller_id=members[0].instance_id,
                timeouts=self.timeouts,
            )
            wait_serving(self.drivers, members[0], len(members), self.timeouts)
        except StepFailed as exc:
            self._teardown_all(members)  # nothing left half-configured
            self._finish_configure(cluster_id, SchedulerState.FAILED, str(exc), members, None)
            return
        took = time.monotonic() - started
        self._finish_configure(
            cluster_id,
            SchedulerState.READY,
            f"{len(members)} nodes idle in sinfo; configured in {took:.1f} s",
            members,
            seal_key(self.box, key),  # kept sealed: a replacement joins with it
        )

    def _finish_configure(
        self,
        cluster_id: str,
        state: SchedulerState,
        reason: str,
        members: Sequence[Target],
        sealed_key: str | None,
    ) -> None:
        now = self.clock.now()
        with self.db.transaction() as s:
            c = s.get(ClusterRow, cluster_id)
            if c is None:
                return
            c.scheduler_lease_until = None
            if c.scheduler_state != SchedulerState.CONFIGURING.value:
                return  # terminated meanwhile: the teardown step takes over
            c.scheduler_controller = members[0].instance_id if members else None
            c.scheduler_simulated = False
            if state is SchedulerState.READY:
                c.scheduler_ready_at = now
                c.scheduler_key = sealed_key
                c.scheduler_nodes = configured(members)
                if c.running_at is not None:
                    wait = (now - c.running_at).total_seconds()
                    reason += f"; ready {wait:.1f} s after the cluster ran"
            set_scheduler(s, c, now, state, reason)

    # -- teardown -----------------------------------------------------------------------------

    def _teardown_all(self, members: Sequence[Target]) -> dict[str, str]:
        """Remove Slurm from every member; answer {instance id: what went wrong}."""

        def teardown(m: Target) -> tuple[int, str]:
            if m.simulated:
                return 0, ""
            driver = self.drivers.for_node(m.node)
            if not isinstance(driver, Executor):
                return 0, ""  # nothing could have been configured through it
            return driver.run_root(m.node, conf.TEARDOWN, timeout_s=self.timeouts.teardown_s)

        failures = {}
        for m, (status, out) in zip(members, each(teardown, members), strict=True):
            failure = removal_failure(m.name, status, out)
            if failure is not None:
                failures[m.instance_id] = failure
        return failures

    def teardown(self, cluster_id: str) -> None:
        with self.db.transaction() as s:
            c = s.get(ClusterRow, cluster_id)
            members = live_members(s, cluster_id)
            # members Slurm still counts on that no longer run (a lost controller's node); the
            # drained ones had Slurm removed when they were drained
            nodes = (c.scheduler_nodes or {}) if c is not None else {}
            serving = {i for i, n in nodes.items() if not n.get("drained")}
            gone = serving - {m.instance_id for m in members}
            members += [m.target for m in lost_members(s, sorted(gone))]
        failures = self._teardown_all(members)
        now = self.clock.now()
        with self.db.transaction() as s:
            c = s.get(ClusterRow, cluster_id)
            if c is not None:
                finish_teardown(s, c, now, failures=failures)


def configured(members: Sequence[Target]) -> dict[str, object]:
    """Slurm's nodes as configured for ``members`` (``ClusterRow.scheduler_nodes``)."""
    return {m.instance_id: {"name": m.name, "drained": False} for m in members}


def member_leaving(s: Session, c: ClusterRow, members: Sequence[Target]) -> str | None:
    """Why the cluster is losing a member (one is asked to stop, or one is gone), else None."""
    stopping = s.scalars(
        sa.select(InstanceRow)
        .where(
            InstanceRow.cluster_id == c.id,
            InstanceRow.state == InstanceState.RUNNING.value,
            InstanceRow.stop_at.is_not(None),
        )
        .limit(1)
    ).first()
    if stopping is not None:
        return f"member {workload_hostname(stopping)} stops ({stopping.stop_reason or 'user'})"
    if len(members) < c.node_count:
        return f"{c.node_count - len(members)} of {c.node_count} members are not running"
    return None


def finish_teardown(s: Session, c: ClusterRow, now: datetime, *, failures: dict[str, str]) -> None:
    """Slurm is gone (or not, on the members in ``failures``, whose nodes go to repair).
    A terminated cluster's members stop now; after a lost member, the scheduler is
    ``failed`` with the reason and the members go on as they were asked."""
    c.scheduler_lease_until = None
    c.scheduler_key, c.scheduler_nodes = None, None  # the key is gone from every member
    terminating = c.state == ClusterState.STOPPING.value
    why = c.scheduler_reason or ""
    if terminating:
        stop_members(s, c, now, reason=Reason.USER, at=now)
    for instance_id, why_failed in failures.items():
        row = s.get(InstanceRow, instance_id)
        if row is not None and row.node_id:
            repair(s, row.node_id, now, why_failed)
    if failures:
        set_scheduler(
            s,
            c,
            now,
            SchedulerState.FAILED,
            "removing Slurm failed (those nodes went to repair): " + "; ".join(failures.values()),
        )
    elif terminating:
        set_scheduler(s, c, now, SchedulerState.REMOVED, "Slurm removed from every member")
    else:
        lost = why.removesuffix(": removing Slurm from every member")
        set_scheduler(
            s,
            c,
            now,
            SchedulerState.FAILED,
            f"{lost}: Slurm was removed from every member (a lost controller is not replaced:"
            " its state and queue were on it)",
        )


def scheduler_view(c: ClusterRow, members: Sequence[InstanceRow]) -> dict[str, object] | None:
    """The cluster's ``scheduler`` answer: type, state, reason, simulated, the controller
    (instance, hostname, address) and the tenant's login command while it is ready."""
    if c.scheduler is None:
        return None
    controller = next((m for m in members if m.id == c.scheduler_controller), None)
    ctl: dict[str, object] | None = None
    login = None
    if controller is not None and controller.access:
        host = str(controller.access.get("host"))
        ctl = {
            "instance_id": controller.id,
            "hostname": workload_hostname(controller),
            "address": host,
        }
        if c.scheduler_state == SchedulerState.READY.value and controller.state == "running":
            login = ssh_command(
                host, int(controller.access.get("port", 22)), str(controller.access.get("user"))
            )
    return {
        "type": c.scheduler,
        "state": c.scheduler_state,
        "reason": c.scheduler_reason,
        "simulated": c.scheduler_simulated,
        "controller": ctl,
        "login_command": login,
        "ready_at": c.scheduler_ready_at,
    }
