"""Decision tables: one row per (state, event) → action, for the reconciler's pure decisions and
for the one rule every state change follows (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from neocloud.compute.decisions import (
    InstanceAction,
    NodeAction,
    NodeFacts,
    decide_cluster,
    decide_instance,
    decide_node,
)
from neocloud.compute.domain import (
    CLUSTER,
    INSTANCE,
    RESERVATION,
    ClusterState,
    InstanceState,
    ReservationState,
)
from neocloud.compute.lifecycle import move_cluster, move_instance, move_reservation
from neocloud.compute.tables import ClusterRow, ComputeEventRow, InstanceRow, ReservationRow
from neocloud.kernel.errors import IllegalTransition

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
PAST, LATER = NOW - timedelta(seconds=1), NOW + timedelta(seconds=1)
IA = InstanceAction

# --- decide_instance: (state, step, due_at, stop_at) → action -------------------------------

INSTANCE_ROWS = [
    # provisioning: start the provision step, then mark running when it is done
    ("provisioning", None, None, None, IA.PROVISION),
    ("provisioning", "provision", LATER, None, IA.NONE),
    ("provisioning", "provision", PAST, None, IA.MARK_RUNNING),
    ("provisioning", "provision", NOW, None, IA.MARK_RUNNING),
    # a stop that is due wins over everything else in provisioning and running
    ("provisioning", "provision", LATER, PAST, IA.DEPROVISION),
    ("running", None, None, NOW, IA.DEPROVISION),
    ("running", None, None, LATER, IA.NONE),
    ("running", None, None, None, IA.NONE),
    # stopping: finish when the deprovision step is due
    ("stopping", "deprovision", LATER, PAST, IA.NONE),
    ("stopping", "deprovision", PAST, PAST, IA.FINISH),
    ("stopping", None, None, None, IA.FINISH),
    # the scheduler moves pending ones; final ones are done
    ("pending", None, None, PAST, IA.NONE),
    ("terminated", None, None, PAST, IA.NONE),
    ("failed", None, None, None, IA.NONE),
    ("preempted", None, None, None, IA.NONE),
]


@pytest.mark.parametrize(("state", "step", "due_at", "stop_at", "action"), INSTANCE_ROWS)
def test_decide_instance(
    state: str,
    step: str | None,
    due_at: datetime | None,
    stop_at: datetime | None,
    action: InstanceAction,
) -> None:
    assert decide_instance(state, step, due_at, stop_at, NOW) is action


# --- decide_node: (state, started, provisioning, running, wipe_due) → action ----------------

NODE_ROWS = [
    ("failed", 1, 0, 1, None, NodeAction.FAIL_WORKLOADS),
    ("failed", 0, 0, 0, None, NodeAction.NONE),
    ("available", 1, 0, 0, None, NodeAction.ALLOCATE),
    ("available", 0, 0, 0, None, NodeAction.NONE),
    ("allocated", 0, 0, 0, None, NodeAction.UNALLOCATE),
    ("allocated", 1, 0, 0, None, NodeAction.NONE),
    ("allocated", 1, 1, 0, None, NodeAction.PROVISION),
    ("allocated", 1, 0, 1, None, NodeAction.PROVISION),
    ("provisioning", 0, 0, 0, None, NodeAction.RELEASE),
    ("provisioning", 1, 1, 0, None, NodeAction.NONE),
    ("provisioning", 1, 0, 1, None, NodeAction.IN_USE),
    ("in_use", 0, 0, 0, None, NodeAction.RELEASE),
    ("in_use", 1, 0, 1, None, NodeAction.NONE),
    ("draining", 0, 0, 0, None, NodeAction.RELEASE),
    ("draining", 1, 0, 1, None, NodeAction.NONE),
    ("releasing", 0, 0, 0, None, NodeAction.WIPE),
    ("wiping", 0, 0, 0, False, NodeAction.NONE),
    ("wiping", 0, 0, 0, True, NodeAction.FREE),
    ("cordoned", 0, 0, 0, None, NodeAction.NONE),
]


@pytest.mark.parametrize(
    ("state", "started", "provisioning", "running", "wipe_due", "action"), NODE_ROWS
)
def test_decide_node(
    state: str,
    started: int,
    provisioning: int,
    running: int,
    wipe_due: bool | None,
    action: NodeAction,
) -> None:
    assert decide_node(NodeFacts(state, started, provisioning, running, wipe_due)) is action


# --- decide_cluster: (state, members' (state, reason), reason) → (next state, reason) -------

R, P, F = ("running", None), ("provisioning", None), ("failed", "node_failed")
CS = ClusterState
CLUSTER_ROWS = [
    ("provisioning", [R, R], None, (CS.RUNNING, None)),
    ("provisioning", [R, P], None, (None, None)),
    ("provisioning", [R, F], None, (CS.DEGRADED, "node_failed")),
    ("running", [R, R], None, (None, None)),
    ("running", [R, F], None, (CS.DEGRADED, "node_failed")),
    ("degraded", [R, F, P], "node_failed", (None, None)),
    ("degraded", [R, F, R], "node_failed", (CS.RUNNING, None)),
    ("running", [F, F], None, (CS.FAILED, "node_failed")),
    ("running", [("preempted", "preempted"), F], None, (CS.PREEMPTED, "preempted")),
    ("stopping", [R, ("stopping", "user")], "user", (None, None)),
    ("stopping", [("terminated", "user")] * 2, "user", (CS.TERMINATED, "user")),
    ("stopping", [("terminated", "user")] * 2, None, (CS.TERMINATED, "user")),
    ("stopping", [F, F], "maintenance", (CS.TERMINATED, "maintenance")),
]


@pytest.mark.parametrize(("state", "members", "reason", "outcome"), CLUSTER_ROWS)
def test_decide_cluster(
    state: str,
    members: list[tuple[str, str | None]],
    reason: str | None,
    outcome: tuple[ClusterState | None, str | None],
) -> None:
    assert decide_cluster(state, 2, members, reason) == outcome


# --- the transition rule, the same for every machine ----------------------------------------


def _instance(state: InstanceState) -> InstanceRow:
    return InstanceRow(id="inst_1", org_id="org_1", state=state.value, node_id="node_1")


def _cluster(state: ClusterState) -> ClusterRow:
    return ClusterRow(id="clu_1", org_id="org_1", state=state.value)


def _events(s: Session) -> list[ComputeEventRow]:
    return [o for o in s.new if isinstance(o, ComputeEventRow)]


@pytest.mark.parametrize(
    ("machine", "state", "target"),
    [
        (INSTANCE, InstanceState.RUNNING, InstanceState.PENDING),
        (INSTANCE, InstanceState.TERMINATED, InstanceState.RUNNING),
        (CLUSTER, ClusterState.STOPPING, ClusterState.RUNNING),
        (RESERVATION, ReservationState.ACTIVE, ReservationState.CANCELLED),
    ],
)
def test_a_move_outside_the_table_is_refused(machine, state, target) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(IllegalTransition):
        machine.go(state, target)


def test_reason_and_message_describe_the_current_state() -> None:
    s = Session()
    row = _instance(InstanceState.PENDING)
    row.state_message = "queued until later: no room"
    move_instance(s, row, InstanceState.PROVISIONING, NOW)
    assert (row.state, row.state_reason, row.state_message) == ("provisioning", None, None)
    move_instance(s, row, InstanceState.STOPPING, NOW, reason="user", message="asked")
    assert (row.state_reason, row.state_message) == ("user", "asked")
    move_instance(s, row, InstanceState.TERMINATED, NOW, reason="user")
    assert (row.state_reason, row.state_message, row.ended_at) == ("user", None, NOW)
    events = _events(s)
    assert [(e.from_state, e.to_state) for e in events] == [
        ("pending", "provisioning"),
        ("provisioning", "stopping"),
        ("stopping", "terminated"),
    ]
    assert {e.node_id for e in events} == {"node_1"}


def test_running_at_is_the_first_time_it_ran() -> None:
    s = Session()
    c = _cluster(ClusterState.PROVISIONING)
    move_cluster(s, c, ClusterState.RUNNING, NOW)
    move_cluster(s, c, ClusterState.DEGRADED, LATER, reason="node_failed")
    assert c.state_reason == "node_failed"
    move_cluster(s, c, ClusterState.RUNNING, LATER + timedelta(hours=1))
    assert (c.running_at, c.state_reason, c.ended_at) == (NOW, None, None)
    inst = _instance(InstanceState.PROVISIONING)
    move_instance(s, inst, InstanceState.RUNNING, NOW)
    assert inst.running_at == NOW


def test_a_reservation_moves_by_the_same_rule() -> None:
    s = Session()
    rsv = ReservationRow(id="rsv_1", org_id="org_1", state="scheduled")
    move_reservation(s, rsv, ReservationState.ACTIVE, NOW)
    assert (rsv.state, rsv.state_reason, rsv.updated_at) == ("active", None, NOW)
    move_reservation(s, rsv, ReservationState.EXPIRED, LATER, reason="reservation_ended")
    assert rsv.state_reason == "reservation_ended"
    assert [(e.to_state, e.reason) for e in _events(s)] == [
        ("active", None),
        ("expired", "reservation_ended"),
    ]
