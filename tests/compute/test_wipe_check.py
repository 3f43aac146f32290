"""A driver whose wipe only starts the work (a reimage, ``WipeChecker``): the reconciler asks it
before a node is available again. A scripted fake (the simulator plus ``check_wipe``) stands in
for the BMC and SSH, which ``tests/nodes/test_redfish_reimage.py`` drives for real. One test per
row: not over yet → still wiping, checked again later; over → available; failed → failed with
the reason; a check that raises → failed with the error. Also: a workload's boot seed is gone
once the workload stops."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from neocloud.client import Client
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database
from neocloud.drivers.base import NodeRef, WipeChecker, WipeProgress
from neocloud.drivers.sim import SimDriver
from neocloud.fleet.seeds import fetch_seed, publish_seed
from neocloud.fleet.tables import NodeEventRow
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.errors import NotFound
from neocloud.kernel.secrets import SecretBox


class CheckingSim(SimDriver):
    """The simulator, and a scripted ``check_wipe``: answers ``script`` in turn (the last one
    again when it runs out); an ``Exception`` in it is raised."""

    def __init__(self, script: list[WipeProgress | Exception]) -> None:
        super().__init__(seed=1)
        self.script = script
        self.asked: list[tuple[str, float]] = []

    def check_wipe(self, node: NodeRef, *, elapsed_s: float) -> WipeProgress:
        self.asked.append((node.id, elapsed_s))
        answer = self.script[min(len(self.asked), len(self.script)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer


def used_and_released(acme: Client, worker: Worker, clock: VirtualClock) -> str:
    """One instance run and terminated: returns the node it ran on (now being wiped)."""
    inst = acme.instances.create("8xH100")
    worker.run_once()
    node_id = str(acme.instances.get(inst["id"])["node_id"])
    acme.instances.terminate(inst["id"])
    worker.run_once()
    clock.advance(1)
    worker.run_once()
    return node_id


def state_of(admin: Client, node_id: str) -> str:
    return str(admin.nodes.get(node_id)["state"])


def last_reason(db: Database, node_id: str) -> str:
    with db.transaction() as s:
        row = s.scalars(
            sa.select(NodeEventRow)
            .where(NodeEventRow.node_id == node_id)
            .order_by(NodeEventRow.at.desc(), NodeEventRow.id.desc())
            .limit(1)
        ).one()
        return row.reason or ""


def test_the_fake_is_a_wipe_checker() -> None:
    assert isinstance(CheckingSim([]), WipeChecker)
    assert not isinstance(SimDriver(), WipeChecker)


def test_not_over_keeps_the_node_wiping_until_the_driver_says_it_is(
    fleet: Client, acme: Client, db: Database, clock: VirtualClock
) -> None:
    fake = CheckingSim(
        [WipeProgress(False, retry_s=30), WipeProgress(True, notes=("reimaged: marker gone",))]
    )
    worker = Worker(db, clock, driver=fake, holder="w")
    node_id = used_and_released(acme, worker, clock)
    assert state_of(fleet, node_id) == "wiping"
    assert len(fake.asked) == 1
    assert fake.asked[0][1] == 0  # asked at once (the simulator's wipe takes no time)
    clock.advance(28)  # 29 s after the first answer (the helper advanced 1 s)
    worker.run_once()
    assert state_of(fleet, node_id) == "wiping"  # not asked again before retry_s
    assert len(fake.asked) == 1
    clock.advance(1)
    worker.run_once()
    assert state_of(fleet, node_id) == "available"
    assert fake.asked[-1] == (node_id, 30.0)
    assert last_reason(db, node_id) == "reimaged: marker gone"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (WipeProgress(True, ok=False, message="reimage failed: SSH silent"), "SSH silent"),
        (RuntimeError("bmc exploded"), "wipe check error: RuntimeError: bmc exploded"),
    ],
)
def test_a_failed_or_broken_check_fails_the_node_with_the_reason(
    fleet: Client, acme: Client, db: Database, clock: VirtualClock, answer: Any, reason: str
) -> None:
    worker = Worker(db, clock, driver=CheckingSim([answer]), holder="w")
    node_id = used_and_released(acme, worker, clock)
    assert state_of(fleet, node_id) == "failed"
    assert reason in last_reason(db, node_id)
    clock.advance(3600)
    worker.run_once()
    assert state_of(fleet, node_id) == "failed"  # nothing brings it back but the operator


def test_a_workloads_seed_is_gone_once_it_stops(
    fleet: Client, acme: Client, db: Database, clock: VirtualClock, worker: Worker
) -> None:
    box = SecretBox(SecretBox.new_key())
    inst = acme.instances.create("8xH100")
    worker.run_once()
    got = acme.instances.get(inst["id"])
    token = publish_seed(
        db=db, clock=clock, box=box, node_id=got["node_id"], workload_id=got["id"], image=b"i"
    )
    other = publish_seed(
        db=db, clock=clock, box=box, node_id=got["node_id"], workload_id="reimage-x", image=b"r"
    )
    assert fetch_seed(db=db, clock=clock, box=box, token=token) == b"i"
    acme.instances.terminate(inst["id"])
    worker.run_once()
    with pytest.raises(NotFound):
        fetch_seed(db=db, clock=clock, box=box, token=token)
    assert fetch_seed(db=db, clock=clock, box=box, token=other) == b"r"  # not this workload's
