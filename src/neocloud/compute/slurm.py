"""Managed Slurm on a cluster's members: configured when they all run, removed before they stop.

A cluster created with ``"scheduler": {"type": "slurm"}`` starts with its scheduler
``configuring``. Once every member runs with access, the compute worker (``SlurmSteps``, one
call per cycle) configures Slurm through the members' drivers (``drivers.base.Executor``) in a
background thread, so a slow server never holds the worker's cycle:

1. probe every member: Slurm and munge installed, ``slurmd -C``'s CPUs and memory, GPU device
   files, the tenant login's uid (it must be the same on every member: Slurm runs a job as one
   uid everywhere);
2. a fresh munge key for this cluster (128 random bytes, in memory only: handed to each member
   on the script's standard input, written 0400 ``munge:munge``, never stored, logged or
   returned), ``slurm.conf`` with each member as ``NodeName`` = its tenant hostname and
   ``NodeAddr`` = its address, ``gres.conf``, ``topology.conf`` from ``topology_export``'s tree
   form, ``slurmctld`` on the first member, ``slurmd`` on all (systemd where it is PID 1,
   else started directly);
3. wait until ``sinfo`` shows every node idle → ``ready`` (the controller and its login
   command in the cluster's answer), or ``failed`` with the reason, after removing what was
   written, so nothing is left half-configured.

Terminating such a cluster first removes Slurm from every member (``removing``: daemons
stopped, key, configuration and state gone, checked), then stops the members. A member where
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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.compute import slurm_conf as conf
from neocloud.compute.access import ssh_command
from neocloud.compute.clusters import SchedulerState
from neocloud.compute.domain import CLUSTER_FINAL, ClusterState, InstanceState, Reason
from neocloud.compute.lifecycle import record_event, stop_members
from neocloud.compute.reconciler import node_ref, send_to_repair, workload_hostname
from neocloud.compute.snapshot import levels_of
from neocloud.compute.tables import ClusterRow, InstanceRow
from neocloud.compute.topology_export import Member, layout_for, slurm_tree
from neocloud.db.engine import Database
from neocloud.drivers.base import Drivers, Executor, NodeRef
from neocloud.fleet.catalog import resolve_gpu_model
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.clock import Clock

log = logging.getLogger(__name__)
MUNGE_KEY_BYTES = 128
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class SlurmTimeouts:
    """Seconds: per probe, per install-and-start, for every node to show idle, per teardown;
    ``lease_s`` bounds a whole step (another worker takes over after it)."""

    probe_s: float = 60
    install_s: float = 120
    ready_s: float = 120
    teardown_s: float = 90
    lease_s: float = 900


@dataclass(frozen=True)
class Target:
    """One member as the steps need it: its instance, Slurm name, address, node and path."""

    instance_id: str
    name: str
    address: str
    login_user: str
    simulated: bool
    node: NodeRef
    path: dict[str, str]


class StepFailed(Exception):
    """A configure step failed; the message is the scheduler's reason (names the member)."""


def each(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``fn`` over ``items`` side by side, one daemon thread each (a process that exits
    mid-step is not held up: the step's lease lets a later worker run it again, and every
    script is safe to run twice). ``fn`` must not raise (the driver's ``run_root`` does not)."""
    if len(items) <= 1:
        return [fn(i) for i in items]
    results: list[R | None] = [None] * len(items)

    def run(i: int) -> None:
        results[i] = fn(items[i])

    threads = [
        threading.Thread(target=run, args=(i,), name="slurm-node", daemon=True)
        for i in range(len(items))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if any(r is None for r in results):
        raise StepFailed("a step on a member ended without an answer")
    return [r for r in results if r is not None]


class SlurmSteps:
    """The compute worker's Slurm step (see the module docstring); ``run_once`` is cheap: it
    reads which clusters need a step and starts it in a thread."""

    def __init__(
        self, db: Database, clock: Clock, drivers: Drivers, timeouts: SlurmTimeouts | None = None
    ) -> None:
        self.db, self.clock, self.drivers = db, clock, drivers
        self.timeouts = timeouts or SlurmTimeouts()
        self.running: dict[str, threading.Thread] = {}  # cluster id -> its step

    def wait(self, timeout_s: float = 600) -> None:
        """Wait for the steps in flight (tests)."""
        for thread in list(self.running.values()):
            thread.join(timeout_s)

    def run_once(self) -> int:
        """Start the steps due now; answer how many started or were applied at once."""
        self.running = {k: t for k, t in self.running.items() if t.is_alive()}
        now = self.clock.now()
        started: list[tuple[str, Callable[[str], None]]] = []
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

    def _due(self, s: Session, c: ClusterRow, now: datetime) -> Callable[[str], None] | None:
        """The threaded step ``c`` needs now, if any; quick moves are applied here."""
        members = live_members(s, c.id)
        leaving = member_leaving(s, c, members)
        if c.scheduler_state == SchedulerState.READY.value:
            if leaving is None:
                return None
            # Replacing a member inside Slurm is not managed yet: Slurm comes off every
            # member (the reconciler holds the members until it has), then they go on.
            c.scheduler_state = SchedulerState.REMOVING.value
            c.scheduler_reason = f"{leaving}: removing Slurm from every member"
            if all(m.simulated for m in members):
                finish_teardown(s, c, now, failures={})
                return None
            return self.teardown
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
        if c.state != ClusterState.RUNNING.value or leaving is not None:
            return None
        if any(not m.address for m in members):
            return None
        if all(m.simulated for m in members):
            c.scheduler_controller = members[0].instance_id
            c.scheduler_simulated = True
            c.scheduler_ready_at = now
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

    def _guarded(self, step: Callable[[str], None], cluster_id: str) -> None:
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
            topology = self._topology(s, c, members)
            title = c.name or c.id
        try:
            hardware = self._probe(members)
            files = render_files(title, members, hardware, topology)
            self._install(members, hardware, files)
            self._wait_ready(members)
        except StepFailed as exc:
            self._teardown_all(members)  # nothing left half-configured
            self._finish_configure(cluster_id, SchedulerState.FAILED, str(exc), members)
            return
        took = time.monotonic() - started
        self._finish_configure(
            cluster_id,
            SchedulerState.READY,
            f"{len(members)} nodes idle in sinfo; configured in {took:.1f} s",
            members,
        )

    def _topology(self, s: Session, c: ClusterRow, members: Sequence[Target]) -> str:
        levels = levels_of(s)
        model = resolve_gpu_model(c.gpu_model)
        per_node = members[0].node.gpu_count if members else model.max_gpus_per_node
        layout = layout_for(levels, rack_scale_nvlink=model.nvlink_domain > per_node)
        placed = [Member(m.name, m.path) for m in members if m.path]
        if len(placed) != len(members) or not levels:
            return ""
        return slurm_tree(placed, layout, title=c.name or c.id)

    def _executor(self, m: Target) -> Executor:
        driver = self.drivers.for_node(m.node)
        if not isinstance(driver, Executor):
            raise StepFailed(
                f"member {m.name}: its node's driver ({m.node.driver}) cannot run commands,"
                " which configuring Slurm needs"
            )
        return driver

    def _probe(self, members: Sequence[Target]) -> dict[str, conf.NodeHardware]:
        executors = [self._executor(m) for m in members]

        def probe(i: int) -> tuple[int, str]:
            m = members[i]
            return executors[i].run_root(
                m.node, conf.probe_script(m.login_user), timeout_s=self.timeouts.probe_s
            )

        found: dict[str, conf.NodeHardware] = {}
        for m, (status, out) in zip(members, each(probe, range(len(members))), strict=True):
            if status == conf.PROBE_NOT_INSTALLED:
                raise StepFailed(
                    f"member {m.name}: Slurm is not installed ({conf.one_line(out)}); the image"
                    " needs slurmctld, slurmd, slurm-client and munge"
                )
            if status != 0:
                raise StepFailed(f"member {m.name}: probe failed (exit {status}): {tail(out)}")
            try:
                found[m.instance_id] = conf.parse_probe(out)
            except conf.SlurmProbeError as exc:
                raise StepFailed(f"member {m.name}: probe: {exc}") from None
        uids = {hw.login_uid for hw in found.values()}
        if None in uids or len(uids) != 1:
            seen = ", ".join(f"{m.name}: {found[m.instance_id].login_uid}" for m in members)
            raise StepFailed(
                f"the login user {members[0].login_user} must have one uid on every member"
                f" (Slurm runs a job as one uid everywhere); found {seen}"
            )
        return found

    def _install(
        self,
        members: Sequence[Target],
        hardware: dict[str, conf.NodeHardware],
        files: dict[str, str],
    ) -> None:
        key = secrets.token_bytes(MUNGE_KEY_BYTES)

        def install(i: int) -> tuple[int, str]:
            m = members[i]
            script = conf.install_script(
                node=conf.SlurmNode(m.name, m.address, hardware[m.instance_id]),
                controller=i == 0,
                files=files,
            )
            return self._executor(m).run_root(
                m.node, script, timeout_s=self.timeouts.install_s, stdin=key
            )

        results = each(install, range(len(members)))  # the key dies with this call
        reasons = {
            conf.INSTALL_DIRS: "writing the configuration failed",
            conf.INSTALL_KEY: "writing the munge key failed",
            conf.INSTALL_MUNGE: "munged did not start",
            conf.INSTALL_CTLD: "slurmctld did not start",
            conf.INSTALL_SLURMD: "slurmd did not start",
        }
        for m, (status, out) in zip(members, results, strict=True):
            if status != 0:
                why = reasons.get(status, f"install failed (exit {status})")
                raise StepFailed(f"member {m.name}: {why}: {tail(out)}")

    def _wait_ready(self, members: Sequence[Target]) -> None:
        controller = members[0]
        deadline = int(self.timeouts.ready_s)
        status, out = self._executor(controller).run_root(
            controller.node,
            conf.wait_script(count=len(members), deadline_s=deadline),
            timeout_s=self.timeouts.ready_s + 30,
        )
        if status == conf.WAIT_TIMED_OUT:
            raise StepFailed(
                f"not every node was idle in sinfo within {deadline} s (can the members reach"
                f" each other on Slurm's ports 6817-6818?): {tail(out)}"
            )
        if status != 0:
            raise StepFailed(f"member {controller.name}: sinfo failed (exit {status}): {tail(out)}")

    def _finish_configure(
        self, cluster_id: str, state: SchedulerState, reason: str, members: Sequence[Target]
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
            if status == conf.TEARDOWN_RUNNING:
                failures[m.instance_id] = f"Slurm daemons still run on {m.name}: {tail(out)}"
            elif status == conf.TEARDOWN_FILES:
                failures[m.instance_id] = f"{tail(out)} is still on {m.name}"
            elif status != 0:
                failures[m.instance_id] = f"removing Slurm from {m.name} failed: {tail(out)}"
        return failures

    def teardown(self, cluster_id: str) -> None:
        with self.db.transaction() as s:
            members = live_members(s, cluster_id)
        failures = self._teardown_all(members)
        now = self.clock.now()
        with self.db.transaction() as s:
            c = s.get(ClusterRow, cluster_id)
            if c is not None:
                finish_teardown(s, c, now, failures=failures)


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
    terminating = c.state == ClusterState.STOPPING.value
    why = c.scheduler_reason or ""
    if terminating:
        stop_members(s, c, now, reason=Reason.USER, at=now)
    for instance_id, why_failed in failures.items():
        row = s.get(InstanceRow, instance_id)
        node = s.get(NodeRow, row.node_id) if row is not None and row.node_id else None
        if node is not None:
            send_to_repair(s, node, now, why_failed)
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
            f"{lost}: Slurm was removed from every member (a member is not replaced inside"
            " Slurm yet)",
        )


def render_files(
    title: str,
    members: Sequence[Target],
    hardware: dict[str, conf.NodeHardware],
    topology: str,
) -> dict[str, str]:
    """The configuration files every member gets, by file name."""
    nodes = [conf.SlurmNode(m.name, m.address, hardware[m.instance_id]) for m in members]
    name = slurm_cluster_name(title)
    return {
        "slurm.conf": conf.slurm_conf(name, nodes[0], nodes, topology=bool(topology)),
        "gres.conf": conf.gres_conf(nodes),
        "topology.conf": topology,
        "cgroup.conf": conf.CGROUP_CONF,
    }


def slurm_cluster_name(title: str) -> str:
    """Slurm's ``ClusterName``: lowercase letters, digits and ``-``, at most 40 characters."""
    name = "".join(ch if ch.isalnum() else "-" for ch in title.lower()).strip("-")
    return (name or "cluster")[:40]


def live_members(s: Session, cluster_id: str) -> list[Target]:
    """The cluster's members that hold a node now, in id order (the first runs slurmctld)."""
    rows = list(
        s.scalars(
            sa.select(InstanceRow)
            .where(
                InstanceRow.cluster_id == cluster_id,
                InstanceRow.state.in_([InstanceState.RUNNING.value]),
                InstanceRow.node_id.is_not(None),
            )
            .order_by(InstanceRow.id)
        )
    )
    nodes = {
        n.id: n
        for n in s.scalars(sa.select(NodeRow).where(NodeRow.id.in_({r.node_id for r in rows})))
    }
    out = []
    for r in rows:
        node = nodes.get(r.node_id or "")
        if node is None:
            continue
        access = r.access or {}
        out.append(
            Target(
                instance_id=r.id,
                name=workload_hostname(r),
                address=str(access.get("host") or ""),
                login_user=r.login_user or "ubuntu",
                simulated=bool(access.get("simulated", False)),
                node=node_ref(node),
                path=dict(node.topology or {}),
            )
        )
    return out


def set_scheduler(
    s: Session, c: ClusterRow, now: datetime, state: SchedulerState, reason: str
) -> None:
    """Move the cluster's scheduler to ``state`` with ``reason``; one event records it."""
    c.scheduler_state = state.value
    c.scheduler_reason = reason[:1000]
    c.updated_at = now
    record_event(
        s,
        subject_id=c.id,
        org_id=c.org_id,
        now=now,
        kind="scheduler",
        to_state=state.value,
        message=f"slurm {state.value}: {reason}"[:1000],
    )


def tail(text: str, limit: int = 400) -> str:
    return conf.one_line(text[-4000:], limit)


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
