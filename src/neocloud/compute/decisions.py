"""The reconciler's decisions: pure functions from facts to the next step (no I/O).

One table-like function per kind: ``decide_instance``, ``decide_node``, ``decide_cluster``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from neocloud.compute.domain import INSTANCE_FINAL, ClusterState, InstanceState, Reason
from neocloud.fleet.domain import NodeState

IS = InstanceState
NS = NodeState
FINAL_VALUES = frozenset(st.value for st in INSTANCE_FINAL)
STOP_OUTCOME = {
    Reason.USER.value: (IS.TERMINATED, Reason.USER),
    Reason.PREEMPTED.value: (IS.PREEMPTED, Reason.PREEMPTED),
    Reason.RESERVATION_ENDED.value: (IS.TERMINATED, Reason.RESERVATION_ENDED),
    Reason.NODE_FAILED.value: (IS.FAILED, Reason.NODE_FAILED),
    Reason.MAINTENANCE.value: (IS.TERMINATED, Reason.MAINTENANCE),
}


class InstanceAction(StrEnum):
    NONE = "none"
    PROVISION = "provision"
    MARK_RUNNING = "mark_running"
    DEPROVISION = "deprovision"
    FINISH = "finish"
    REBOOT = "reboot"
    REBOOTED = "rebooted"


def decide_instance(
    state: str,
    step: str | None,
    due_at: datetime | None,
    stop_at: datetime | None,
    now: datetime,
    reboot_requested: bool = False,
) -> InstanceAction:
    """What to do with one instance now (pure). A stop wins over a reboot asked for."""
    st = InstanceState(state)
    due = due_at is None or due_at <= now
    if st in (IS.PROVISIONING, IS.RUNNING) and stop_at is not None and stop_at <= now:
        return InstanceAction.DEPROVISION
    if st is IS.PROVISIONING and due:
        return InstanceAction.MARK_RUNNING if step == "provision" else InstanceAction.PROVISION
    if st is IS.RUNNING and step == "reboot":
        return InstanceAction.REBOOTED if due else InstanceAction.NONE
    if st is IS.RUNNING and reboot_requested:
        return InstanceAction.REBOOT
    if st is IS.STOPPING and due:
        return InstanceAction.FINISH
    return InstanceAction.NONE


class NodeAction(StrEnum):
    NONE = "none"
    ALLOCATE = "allocate"
    PROVISION = "provision"
    IN_USE = "in_use"
    RELEASE = "release"
    UNALLOCATE = "unallocate"  # allocated but nothing ever ran: no wipe needed
    WIPE = "wipe"
    FREE = "free"
    FAIL_WORKLOADS = "fail_workloads"


@dataclass(frozen=True)
class NodeFacts:
    state: str
    started: int  # allocations that started and have not ended
    provisioning: int  # instances on it with a provision step under way or done
    running: int
    wipe_due: bool | None  # None: no wipe under way


CHAINED = frozenset({NodeAction.ALLOCATE, NodeAction.PROVISION, NodeAction.IN_USE})


def decide_node(f: NodeFacts) -> NodeAction:
    """The next compute-driven move of one node (pure)."""
    st = NodeState(f.state)
    if st is NS.FAILED:
        return NodeAction.FAIL_WORKLOADS if f.started else NodeAction.NONE
    if st is NS.AVAILABLE and f.started:
        return NodeAction.ALLOCATE
    if st is NS.ALLOCATED and not f.started:
        return NodeAction.UNALLOCATE
    if st in (NS.PROVISIONING, NS.IN_USE, NS.DRAINING) and not f.started:
        return NodeAction.RELEASE
    if st is NS.ALLOCATED and (f.provisioning or f.running):
        return NodeAction.PROVISION
    if st is NS.PROVISIONING and f.running:
        return NodeAction.IN_USE
    if st is NS.RELEASING:
        return NodeAction.WIPE
    if st is NS.WIPING and f.wipe_due:
        return NodeAction.FREE
    return NodeAction.NONE


CS = ClusterState
CLUSTER_ACTIVE = (CS.PROVISIONING, CS.RUNNING, CS.DEGRADED, CS.STOPPING)


def decide_cluster(
    state: str, node_count: int, members: list[tuple[str, str | None]], reason: str | None
) -> tuple[ClusterState | None, str | None]:
    """The cluster's next state from its members' (state, reason) (pure)."""
    st = ClusterState(state)
    live = [m for m in members if m[0] not in FINAL_VALUES]
    running = sum(1 for m in live if m[0] == IS.RUNNING.value)
    if not live:
        if st is CS.STOPPING:
            return CS.TERMINATED, reason or Reason.USER.value
        if any(m[0] == IS.PREEMPTED.value for m in members):
            return CS.PREEMPTED, Reason.PREEMPTED.value
        return CS.FAILED, Reason.NODE_FAILED.value
    if st is CS.STOPPING:
        return None, None
    if st is CS.RUNNING and len(live) < node_count:
        return CS.DEGRADED, Reason.NODE_FAILED.value
    if st in (CS.PROVISIONING, CS.DEGRADED) and running == node_count:
        return CS.RUNNING, None
    if st is CS.PROVISIONING and len(live) < node_count:
        return CS.DEGRADED, Reason.NODE_FAILED.value
    return None, None
