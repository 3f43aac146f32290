"""Faults below the control plane, each ending in a precise state: a node that drops off the
network mid-provision (the driver's command times out), one that drops mid-wipe, and a worker
that dies in the middle of a wipe. The tenant's failed time is never billed, and no node goes
back to ``available`` without a completed wipe. (A silent agent: test_agent_silence.py.)"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from neocloud.client import Client
from neocloud.compute.tables import AllocationRow
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database
from neocloud.drivers.base import NodeRef, ProvisionRequest, StepResult
from neocloud.drivers.sim import SimDriver
from neocloud.kernel.clock import VirtualClock


class FaultyDriver(SimDriver):
    """The simulator with chosen faults: ``unreachable`` nodes time out on every command (as
    the ssh driver does past its command timeout); ``crash_on_wipe`` kills the worker's cycle
    in the middle of a wipe (the process dying, not an error the reconciler catches)."""

    def __init__(self) -> None:
        super().__init__(seed=1)
        self.unreachable: set[str] = set()
        self.crash_on_wipe = False
        self.completed_wipes: list[str] = []

    def provision(self, node: NodeRef, request: ProvisionRequest) -> StepResult:
        if node.id in self.unreachable:
            raise TimeoutError(f"ssh {node.hostname}: command timed out after 600 s")
        return super().provision(node, request)

    def wipe(self, node: NodeRef) -> StepResult:
        if self.crash_on_wipe:
            raise SystemExit("worker killed mid-wipe")
        if node.id in self.unreachable:
            raise TimeoutError(f"ssh {node.hostname}: connection timed out")
        result = super().wipe(node)
        self.completed_wipes.append(node.id)
        return result


def _billed_seconds(db: Database, instance_id: str) -> float:
    with db.transaction() as s:
        alloc = s.scalars(
            sa.select(AllocationRow).where(AllocationRow.instance_id == instance_id)
        ).one()
    assert alloc.end_at is not None
    return (alloc.end_at - alloc.start_at).total_seconds()


def test_node_unreachable_mid_provision_fails_unbilled_and_is_not_reused_unwiped(
    fleet: Client, acme: Client, db: Database, clock: VirtualClock
) -> None:
    driver = FaultyDriver()
    driver.unreachable = {n["id"] for n in fleet.nodes.list(limit=100)["data"]}
    worker = Worker(db, clock, driver=driver, holder="w")
    bad = acme.instances.create("8xH100")
    for _ in range(5):
        worker.run_once()
        clock.advance(1)
    got = acme.instances.get(bad["id"])
    assert (got["state"], got["state_reason"]) == ("failed", "provision_failed")
    assert "timed out" in (got["state_message"] or "")
    assert _billed_seconds(db, bad["id"]) == 0  # the tenant never got it: nothing billed
    node = fleet.nodes.get(got["node_id"])
    assert node["state"] == "repair", node  # its wipe could not run: out of service
    assert driver.completed_wipes == []


def test_node_dropping_mid_wipe_goes_to_repair_never_available(
    fleet: Client, acme: Client, db: Database, clock: VirtualClock
) -> None:
    driver = FaultyDriver()
    worker = Worker(db, clock, driver=driver, holder="w")
    inst = acme.instances.create("8xH100")
    worker.run_once()
    node = acme.instances.get(inst["id"])["node_id"]
    clock.advance(3600)
    worker.run_once()
    acme.instances.terminate(inst["id"])
    driver.unreachable.add(node)  # it drops off as the wipe starts
    for _ in range(5):
        worker.run_once()
        clock.advance(1)
    got = fleet.nodes.get(node)
    assert got["state"] == "repair", got
    assert "wipe failed" in (got["state_reason"] or "")
    assert _billed_seconds(db, inst["id"]) == 3600  # the hour it ran, not the failed wipe
    assert node not in driver.completed_wipes


def test_worker_dying_mid_wipe_leaves_the_node_unavailable_until_a_wipe_completes(
    fleet: Client, acme: Client, db: Database, clock: VirtualClock
) -> None:
    driver = FaultyDriver()
    first = Worker(db, clock, driver=driver, holder="first", lease_ttl_s=5)
    inst = acme.instances.create("8xH100")
    first.run_once()
    node = acme.instances.get(inst["id"])["node_id"]
    acme.instances.terminate(inst["id"])
    driver.crash_on_wipe = True
    try:
        for _ in range(5):
            first.run_once()
            clock.advance(0.2)
        raise AssertionError("the wipe should have killed the worker")
    except SystemExit:
        pass  # the worker process is gone, its leases held until they expire
    assert fleet.nodes.get(node)["state"] in ("releasing", "wiping")
    assert node not in driver.completed_wipes

    driver.crash_on_wipe = False
    second = Worker(db, clock, driver=driver, holder="second", lease_ttl_s=5)
    assert not second.run_once().leader  # the dead worker's lease has not expired yet
    assert fleet.nodes.get(node)["state"] != "available"
    clock.advance(timedelta(seconds=6).total_seconds())
    for _ in range(5):
        second.run_once()
        clock.advance(1)
    assert fleet.nodes.get(node)["state"] == "available"
    assert node in driver.completed_wipes  # wiped by the survivor before it was offered again
