"""The worker, scheduler and reconciler below the API: leases, delays, failures, the
database's refusal to double-book."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from neocloud.client import Client
from neocloud.compute.decisions import (
    InstanceAction,
    NodeAction,
    NodeFacts,
    decide_instance,
    decide_node,
)
from neocloud.compute.tables import AllocationRow, GpuClaimRow
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database
from neocloud.drivers.base import NodeRef, ProvisionRequest
from neocloud.drivers.sim import SimDriver
from neocloud.fleet import service as fleet_service
from neocloud.fleet.domain import CheckStatus
from neocloud.fleet.service import CheckResult
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.errors import Conflict


def test_only_the_lease_holder_works(
    acme: Client, db: Database, clock: VirtualClock, worker: Worker
) -> None:
    other = Worker(db, clock, driver=SimDriver(), holder="other")
    assert worker.run_once().leader
    inst = acme.instances.create("1xH100")
    assert not other.run_once().leader
    assert acme.instances.get(inst["id"])["state"] == "pending"
    clock.advance(16)  # the first holder's lease lapses; the other takes over
    assert other.run_once().leader
    assert acme.instances.get(inst["id"])["state"] == "running"
    assert not worker.run_once().leader


def test_driver_delays_are_waited_out_on_the_clock(
    acme: Client, db: Database, clock: VirtualClock
) -> None:
    driver = SimDriver(delays={"provision": 90, "deprovision": 10, "wipe": 300})
    worker = Worker(db, clock, driver=driver, holder="w")
    inst = acme.instances.create("8xH100")
    worker.run_once()
    assert acme.instances.get(inst["id"])["state"] == "provisioning"
    clock.advance(89)
    worker.run_once()
    assert acme.instances.get(inst["id"])["state"] == "provisioning"
    clock.advance(1)
    worker.run_once()
    got = acme.instances.get(inst["id"])
    assert got["state"] == "running"
    acme.instances.terminate(inst["id"])
    worker.run_once()
    assert acme.instances.get(inst["id"])["state"] == "stopping"
    clock.advance(10)
    worker.run_once()
    assert acme.instances.get(inst["id"])["state"] == "terminated"
    node = fleet_service.get_node(db=db, node_id=got["node_id"])
    assert node.state == "wiping"
    clock.advance(300)
    worker.run_once()
    assert fleet_service.get_node(db=db, node_id=got["node_id"]).state == "available"


def test_provision_failure_fails_the_instance_and_frees_the_node(
    acme: Client, db: Database, clock: VirtualClock
) -> None:
    worker = Worker(db, clock, driver=SimDriver(failure_probability={"provision": 1.0}))
    inst = acme.instances.create("8xH100")
    worker.run_once()
    got = acme.instances.get(inst["id"])
    assert (got["state"], got["state_reason"]) == ("failed", "provision_failed")
    assert fleet_service.get_node(db=db, node_id=got["node_id"]).state == "available"


def test_sim_driver_is_deterministic_under_a_seed() -> None:
    node = NodeRef("node_1", "h1", "H100-SXM-80GB")

    def outcomes(seed: int) -> list[bool]:
        d = SimDriver(failure_probability=0.5, seed=seed)
        return [d.provision(node, ProvisionRequest(f"i{i}", (0,), f"h{i}")).ok for i in range(40)]

    assert outcomes(7) == outcomes(7)
    assert outcomes(7) != outcomes(8)
    assert 5 < sum(outcomes(7)) < 35


def test_node_failure_fails_its_instances(acme: Client, db: Database, clock, worker) -> None:  # type: ignore[no-untyped-def]
    inst = acme.instances.create("8xH100")
    worker.run_once()
    node_id = acme.instances.get(inst["id"])["node_id"]
    fleet_service.report_health(
        db=db,
        clock=clock,
        node_id=node_id,
        checks=[CheckResult("gpu", CheckStatus.FAIL, "Xid 79")],
    )
    worker.run_once()
    got = acme.instances.get(inst["id"])
    assert (got["state"], got["state_reason"]) == ("failed", "node_failed")
    assert fleet_service.get_node(db=db, node_id=node_id).state == "failed"
    # the failed node takes no new work
    again = acme.instances.create("8xH100")
    worker.run_once()
    assert acme.instances.get(again["id"])["node_id"] != node_id


def test_decisions_are_pure_and_table_driven(clock: VirtualClock) -> None:
    now = clock.now()
    later = now + timedelta(seconds=5)
    assert decide_instance("provisioning", None, None, None, now) is InstanceAction.PROVISION
    assert decide_instance("provisioning", None, later, None, now) is InstanceAction.NONE
    assert decide_instance("provisioning", "provision", now, None, now) is (
        InstanceAction.MARK_RUNNING
    )
    assert decide_instance("running", None, None, now, now) is InstanceAction.DEPROVISION
    assert decide_instance("running", None, None, later, now) is InstanceAction.NONE
    assert decide_instance("stopping", "deprovision", now, now, now) is InstanceAction.FINISH
    cases = [
        (NodeFacts("available", 1, 0, 0, None), NodeAction.ALLOCATE),
        (NodeFacts("available", 0, 0, 0, None), NodeAction.NONE),
        (NodeFacts("allocated", 1, 1, 0, None), NodeAction.PROVISION),
        (NodeFacts("provisioning", 1, 0, 1, None), NodeAction.IN_USE),
        (NodeFacts("allocated", 0, 0, 0, None), NodeAction.UNALLOCATE),
        (NodeFacts("in_use", 0, 0, 0, None), NodeAction.RELEASE),
        (NodeFacts("draining", 0, 0, 0, None), NodeAction.RELEASE),
        (NodeFacts("releasing", 0, 0, 0, None), NodeAction.WIPE),
        (NodeFacts("wiping", 0, 0, 0, False), NodeAction.NONE),
        (NodeFacts("wiping", 0, 0, 0, True), NodeAction.FREE),
        (NodeFacts("failed", 1, 0, 1, None), NodeAction.FAIL_WORKLOADS),
    ]
    for facts, action in cases:
        assert decide_node(facts) is action, facts


def _claim(alloc_id: str, node_id: str, start, end, *, firm: bool = True) -> list:  # type: ignore[no-untyped-def]
    alloc = AllocationRow(
        id=alloc_id,
        org_id="org_x",
        node_id=node_id,
        gpu_model="H100-SXM-80GB",
        gpu_count=1,
        gpu_indices=[0],
        vcpus=0,
        ram_gib=0,
        cls="on_demand" if firm else "spot",
        start_at=start,
        end_at=end,
        created_at=start,
    )
    claim = GpuClaimRow(
        allocation_id=alloc_id, gpu_index=0, node_id=node_id, firm=firm, start_at=start, end_at=end
    )
    return [alloc, claim]


def _insert(db: Database, rows: list) -> None:  # type: ignore[type-arg]
    with db.transaction() as s:
        s.add(rows[0])
        s.flush()
        s.add(rows[1])


# The exclusion constraint is PostgreSQL's; SQLite relies on the check in the same transaction.
@pytest.mark.postgres
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_postgres_refuses_overlapping_firm_claims(
    fleet: Client, db: Database, clock: VirtualClock
) -> None:
    assert db.dialect == "postgresql"
    node_id = fleet.nodes.list(limit=1)["data"][0]["id"]
    t0 = clock.now()
    _insert(db, _claim("alc_a", node_id, t0, t0 + timedelta(hours=2)))
    # back to back is fine ([start, end) intervals), and spot may overlap
    _insert(db, _claim("alc_b", node_id, t0 + timedelta(hours=2), None))
    _insert(db, _claim("alc_s", node_id, t0, None, firm=False))
    with pytest.raises(Conflict):
        _insert(db, _claim("alc_c", node_id, t0 + timedelta(hours=1), t0 + timedelta(hours=3)))
    with db.transaction() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(GpuClaimRow)) == 3


def test_drain_evicts_with_notice_and_cordons(
    acme: Client, db: Database, clock: VirtualClock, worker: Worker
) -> None:
    inst = acme.instances.create("8xH100")
    worker.run_once()
    node_id = acme.instances.get(inst["id"])["node_id"]
    fleet_service.drain_node(db=db, clock=clock, node_id=node_id, reason="firmware")
    worker.run_once()
    got = acme.instances.get(inst["id"])
    assert (got["state"], got["stop_reason"]) == ("running", "maintenance")
    clock.advance(30)
    worker.run_once()
    got = acme.instances.get(inst["id"])
    assert (got["state"], got["state_reason"]) == ("terminated", "maintenance")
    assert fleet_service.get_node(db=db, node_id=node_id).state == "cordoned"
