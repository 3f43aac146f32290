"""Burn-in: enrolled and repaired nodes are powered on and health-checked through the driver
before placement may use them; a node that fails goes to repair, never to a tenant."""

from __future__ import annotations

from collections import Counter

from neocloud.client import Client
from neocloud.compute.config import ComputeConfig
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database
from neocloud.drivers.sim import SimDriver
from neocloud.kernel.clock import VirtualClock

from .helpers import SMALL_FLEET, tenant_client


def _states(admin: Client) -> Counter[str]:
    return Counter(n["state"] for n in admin.nodes.list(limit=100)["data"])


def _worker(db: Database, clock: VirtualClock, driver: SimDriver, **config: object) -> Worker:
    return Worker(db, clock, driver=driver, config=ComputeConfig(**config), holder="w")  # type: ignore[arg-type]


def test_new_nodes_take_work_only_after_burn_in(
    admin: Client, db: Database, clock: VirtualClock
) -> None:
    admin.fleet.import_spec(SMALL_FLEET, initial_state="enrolled")
    _, acme = tenant_client(admin, "acme")
    driver = SimDriver(delays={"power": 600.0})
    worker = _worker(db, clock, driver)
    worker.run_once()
    assert _states(admin) == {"burn_in": 8}
    assert [c[0] for c in driver.calls].count("power") == 8
    early = acme.instances.create("8xH100")
    worker.run_once()
    got = acme.instances.get(early["id"])
    assert (got["state"], got["state_reason"]) == ("failed", "no_capacity")
    clock.advance(600)
    worker.run_once()
    assert _states(admin) == {"available": 8}
    assert [c[0] for c in driver.calls].count("health") == 8
    inst = acme.instances.create("8xH100")
    worker.run_once()
    assert acme.instances.get(inst["id"])["state"] == "running"


def test_a_node_failing_burn_in_goes_to_repair_and_back(
    admin: Client, db: Database, clock: VirtualClock
) -> None:
    admin.fleet.import_spec(SMALL_FLEET, initial_state="burn_in")
    _, acme = tenant_client(admin, "acme")
    bad = _worker(db, clock, SimDriver(failure_probability={"health": 1.0}))
    bad.run_once()
    bad.run_once()
    assert _states(admin) == {"repair": 8}
    node = admin.nodes.list(limit=1)["data"][0]
    assert node["health"] == "failed"
    inst = acme.instances.create("1xH100", queue=True)
    bad.run_once()
    assert acme.instances.get(inst["id"])["state"] == "pending"  # never on a failed node

    admin.nodes.transition(node["id"], "burn_in", reason="GPU swapped")
    good = _worker(db, clock, SimDriver())
    good.run_once()
    good.run_once()
    fixed = admin.nodes.get(node["id"])
    assert fixed["health"] == "healthy"
    assert fixed["state"] == "in_use"  # passed burn-in, then took the queued instance
    got = acme.instances.get(inst["id"])
    assert (got["state"], got["node_id"]) == ("running", node["id"])


def test_a_failed_power_step_also_sends_the_node_to_repair(
    admin: Client, db: Database, clock: VirtualClock
) -> None:
    admin.fleet.import_spec(SMALL_FLEET, initial_state="enrolled")
    _worker(db, clock, SimDriver(failure_probability={"power": 1.0})).run_once()
    assert _states(admin) == {"repair": 8}


def test_burn_in_off_leaves_new_nodes_to_the_operator(
    admin: Client, db: Database, clock: VirtualClock
) -> None:
    admin.fleet.import_spec(SMALL_FLEET, initial_state="enrolled")
    driver = SimDriver()
    _worker(db, clock, driver, burn_in=False).run_once()
    assert _states(admin) == {"enrolled": 8}
    assert not driver.calls


def test_a_burn_in_cut_short_by_the_operator_starts_over_next_time(
    admin: Client, db: Database, clock: VirtualClock
) -> None:
    admin.fleet.import_spec(SMALL_FLEET, initial_state="burn_in")
    driver = SimDriver(delays={"power": 600.0})
    worker = _worker(db, clock, driver)
    worker.run_once()  # powered on; the health check is due in 600 s
    node = admin.nodes.list(limit=1)["data"][0]
    admin.nodes.transition(node["id"], "maintenance", reason="pulled for a firmware update")
    worker.run_once()
    admin.nodes.transition(node["id"], "burn_in", reason="firmware done")
    clock.advance(600)
    powered = [c for c in driver.calls if c[0] == "power" and c[1] == node["id"]]
    worker.run_once()  # powered on again, not passed on the old burn-in's timer
    assert admin.nodes.get(node["id"])["state"] == "burn_in"
    assert len([c for c in driver.calls if c[0] == "power" and c[1] == node["id"]]) == (
        len(powered) + 1
    )
    clock.advance(600)
    worker.run_once()
    assert admin.nodes.get(node["id"])["state"] == "available"
