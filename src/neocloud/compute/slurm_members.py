"""What managed Slurm's steps share (``compute/slurm.py`` configures and removes,
``compute/slurm_heal.py`` drains and joins): a member as the steps see it, the step bounds,
running a script on every member side by side, the files every member gets, and the one
function that moves the scheduler's state (with its event)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.compute import slurm_conf as conf
from neocloud.compute.clusters import SchedulerState
from neocloud.compute.domain import InstanceState
from neocloud.compute.lifecycle import record_event
from neocloud.compute.reconciler import node_ref, send_to_repair, workload_hostname
from neocloud.compute.snapshot import levels_of
from neocloud.compute.tables import ClusterRow, InstanceRow
from neocloud.compute.topology_export import Member, layout_for, slurm_tree
from neocloud.drivers.base import Drivers, Executor, NodeRef
from neocloud.fleet.catalog import resolve_gpu_model
from neocloud.fleet.domain import NodeState
from neocloud.fleet.tables import NodeRow

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
    """A step failed; the message is the scheduler's reason (names the member)."""


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


def executor(drivers: Drivers, m: Target) -> Executor:
    """The driver that runs root scripts on ``m``'s node; ``StepFailed`` naming the driver if
    it cannot."""
    driver = drivers.for_node(m.node)
    if not isinstance(driver, Executor):
        raise StepFailed(
            f"member {m.name}: its node's driver ({m.node.driver}) cannot run commands,"
            " which configuring Slurm needs"
        )
    return driver


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
    return [target_of(r, nodes[r.node_id or ""]) for r in rows if (r.node_id or "") in nodes]


def target_of(row: InstanceRow, node: NodeRow) -> Target:
    """``row`` on ``node`` as the steps need it."""
    access = row.access or {}
    return Target(
        instance_id=row.id,
        name=workload_hostname(row),
        address=str(access.get("host") or ""),
        login_user=row.login_user or "ubuntu",
        simulated=bool(access.get("simulated", False)),
        node=node_ref(node),
        path=dict(node.topology or {}),
    )


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


def topology_for(s: Session, c: ClusterRow, members: Sequence[Target]) -> str:
    """``topology.conf`` for ``members`` where placement put them (the cluster's
    ``slurm-tree`` topology export); empty when a member has no place or the fleet no levels."""
    levels = levels_of(s)
    model = resolve_gpu_model(c.gpu_model)
    per_node = members[0].node.gpu_count if members else model.max_gpus_per_node
    layout = layout_for(levels, rack_scale_nvlink=model.nvlink_domain > per_node)
    placed = [Member(m.name, m.path) for m in members if m.path]
    if len(placed) != len(members) or not levels:
        return ""
    return slurm_tree(placed, layout, title=c.name or c.id)


def probe_members(
    drivers: Drivers, members: Sequence[Target], timeouts: SlurmTimeouts
) -> dict[str, conf.NodeHardware]:
    """Every member's hardware by instance id (``slurmd -C``, GPU device files, the login's
    uid, which must be one on every member); ``StepFailed`` naming the member otherwise."""
    executors = [executor(drivers, m) for m in members]

    def probe(i: int) -> tuple[int, str]:
        m = members[i]
        return executors[i].run_root(
            m.node, conf.probe_script(m.login_user), timeout_s=timeouts.probe_s
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


INSTALL_REASONS = {
    conf.INSTALL_DIRS: "writing the configuration failed",
    conf.INSTALL_KEY: "writing the munge key failed",
    conf.INSTALL_MUNGE: "munged did not start",
    conf.INSTALL_CTLD: "slurmctld did not start",
    conf.INSTALL_SLURMD: "slurmd did not start",
}


def check_results(members: Sequence[Target], results: Sequence[tuple[int, str]]) -> None:
    """``StepFailed`` naming the first member whose install or restart script failed."""
    for m, (status, out) in zip(members, results, strict=True):
        if status != 0:
            why = INSTALL_REASONS.get(status, f"install failed (exit {status})")
            raise StepFailed(f"member {m.name}: {why}: {tail(out)}")


def install_members(
    drivers: Drivers,
    members: Sequence[Target],
    *,
    hardware: dict[str, conf.NodeHardware],
    files: dict[str, str],
    key: bytes,
    controller_id: str,
    timeouts: SlurmTimeouts,
) -> None:
    """The key (on standard input), the files, and the daemons started on ``members``
    (``slurmctld`` too on the member ``controller_id``), side by side."""

    def install(m: Target) -> tuple[int, str]:
        script = conf.install_script(
            node=conf.SlurmNode(m.name, m.address, hardware[m.instance_id]),
            controller=m.instance_id == controller_id,
            files=files,
        )
        return executor(drivers, m).run_root(
            m.node, script, timeout_s=timeouts.install_s, stdin=key
        )

    check_results(members, each(install, members))


def wait_serving(
    drivers: Drivers,
    controller: Target,
    count: int,
    timeouts: SlurmTimeouts,
    states: Sequence[str] = ("idle",),
) -> str:
    """Wait on the controller until ``sinfo`` shows ``count`` nodes in ``states``; answers
    what ``sinfo`` showed. ``StepFailed`` at the deadline (``timeouts.ready_s``)."""
    deadline = int(timeouts.ready_s)
    status, out = executor(drivers, controller).run_root(
        controller.node,
        conf.wait_script(count=count, deadline_s=deadline, states=states),
        timeout_s=timeouts.ready_s + 30,
    )
    if status == conf.WAIT_TIMED_OUT:
        raise StepFailed(
            f"not every node was {'/'.join(states)} in sinfo within {deadline} s (can the"
            f" members reach each other on Slurm's ports 6817-6818?): {tail(out)}"
        )
    if status != 0:
        raise StepFailed(f"member {controller.name}: sinfo failed (exit {status}): {tail(out)}")
    return out


def repair(s: Session, node_id: str, now: datetime, why: str) -> None:
    """Send the node to repair (Slurm, or its key, may be left on it), unless it is there."""
    node = s.get(NodeRow, node_id)
    if node is not None and node.state != NodeState.REPAIR.value:
        send_to_repair(s, node, now, why)
