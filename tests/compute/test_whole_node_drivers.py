"""Bare-metal nodes (driver ``ssh``) take whole-node instances only: a partial-node instance type
never lands on one, and the capacity views say so. The worker runs the simulator for every node
(``Drivers.only``), so no real SSH is needed: the rule is the scheduler's, from the node's
``driver`` column."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from neocloud.client import Client
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database
from neocloud.drivers.base import SHARING_DRIVERS, Drivers
from neocloud.drivers.sim import SimDriver
from neocloud.kernel.clock import VirtualClock

from .helpers import tenant_client


def _key() -> str:
    return (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        .decode()
    )


def _register(admin: Client, n: int) -> str:
    node = admin.nodes.add(
        f"metal-{n}",
        gpu_model="H100",
        gpu_count=8,
        vcpus=224,
        ram_gib=2048,
        topology={
            "region": "us-east-1",
            "zone": "us-east-1a",
            "fabric": "metal",
            "block": "metal-b01",
            "rack": "metal-b01-r01",
        },
        driver_config={"address": f"10.231.0.{10 + n}", "private_key": _key(), "gpu_check": "none"},
    )
    assert node["state"] == "enrolled"
    return str(node["id"])


def test_only_the_simulator_shares_nodes() -> None:
    assert frozenset({"sim"}) == SHARING_DRIVERS
    assert Drivers.only(SimDriver()).shares_nodes("ssh")  # the test seam, not the rule


def test_partial_types_stay_off_bare_metal_and_whole_ones_land(
    admin: Client, db: Database, clock: VirtualClock
) -> None:
    ids = {_register(admin, 1), _register(admin, 2)}
    _, acme = tenant_client(admin, "acme")
    worker = Worker(db, clock, driver=Drivers.only(SimDriver(seed=1)), holder="w")
    worker.run_once()  # burn-in: enrolled -> burn_in (powered on)
    worker.run_once()  # health passes: available
    assert {n["state"] for n in admin.nodes.list()["data"]} == {"available"}

    types = {t["id"]: t for t in acme.get("instance-types", gpu_model="H100")["data"]}
    assert types["1xH100"]["availability"]["on_demand"] == "none"
    assert types["4xH100"]["availability"]["on_demand"] == "none"
    assert types["8xH100"]["availability"]["on_demand"] != "none"
    line = admin.get("capacity", gpu_model="H100")["data"][0]
    assert line["partial_node"] == "none"
    assert line["partial_capable_gpus"] == 0
    assert line["free_gpus"] == 16
    assert line["free_nodes"] == 2
    assert acme.get("capacity", gpu_model="H100")["data"][0]["partial_capable_gpus"] is None

    queued = acme.instances.create("1xH100", queue=True)
    now = acme.instances.create("2xH100")
    whole = acme.instances.create("8xH100")
    worker.run_once()
    worker.run_once()
    got = acme.instances.get(whole["id"])
    assert got["state"] == "running"
    assert acme.instances.get(queued["id"])["state"] == "pending"
    refused = acme.instances.get(now["id"])
    assert (refused["state"], refused["state_reason"]) == ("failed", "no_capacity")
    assert "whole-node requests only" in (refused["state_message"] or "")
    second = acme.instances.create("8xH100")
    worker.run_once()
    worker.run_once()
    assert acme.instances.get(second["id"])["state"] == "running"
    used = {a for a in ids if admin.nodes.get(a)["state"] != "available"}
    assert used == ids
    assert acme.instances.get(queued["id"])["state"] == "pending"
