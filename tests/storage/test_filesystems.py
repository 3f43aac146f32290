"""Storage pools and filesystems through the API with simulated nodes (the sim driver) and the
local backend: validation, the lifecycle the reconciler drives, quotas and refusals. The real
GlusterFS path runs on test hosts in tests/nodes/test_storage_e2e.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from compute.helpers import SMALL_FLEET, tenant_client
from neocloud.client import ApiError, Client
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database
from neocloud.drivers.base import Drivers
from neocloud.drivers.sim import SimDriver
from neocloud.kernel.clock import VirtualClock
from neocloud.storage.steps import StorageSteps
from neocloud.storage.tables import FsSizeIntervalRow

TOPOLOGY = {
    "region": "us-east-1",
    "zone": "us-east-1a",
    "fabric": "us-east-1a-ib01",
    "block": "us-east-1a-ib01-st",
    "rack": "us-east-1a-ib01-st-r01",
}


class Cycle:
    """The compute worker with the storage step, run to a settled state."""

    def __init__(self, db: Database, clock: VirtualClock, data_dir: Path) -> None:
        driver = SimDriver(seed=1)
        self.storage = StorageSteps(db, clock, Drivers.of(driver), data_dir=data_dir)
        self.worker = Worker(db, clock, driver=driver, holder="t", steps=[self.storage])
        self.clock = clock

    def __call__(self, times: int = 3) -> None:
        for _ in range(times):
            self.worker.run_once()
            self.storage.wait(30)
            self.clock.advance(1)


@pytest.fixture
def cycle(db: Database, clock: VirtualClock, tmp_path: Path) -> Cycle:
    return Cycle(db, clock, tmp_path)


def _storage_nodes(admin: Client, cycle: Cycle, n: int = 2) -> list[str]:
    ids = [
        admin.nodes.add(
            f"st-{i}.example",
            role="storage",
            vcpus=16,
            ram_gib=64,
            nvme_gib=4000,
            topology=dict(TOPOLOGY),
            driver="sim",
        )["id"]
        for i in range(n)
    ]
    cycle.worker.run_once()
    cycle.clock.advance(600)
    cycle.worker.run_once()
    assert {admin.nodes.get(i)["state"] for i in ids} == {"available"}
    return ids


@pytest.fixture
def setup(admin: Client, cycle: Cycle) -> tuple[Client, Client, dict[str, Any], dict[str, Any]]:
    """The fleet, two sim storage nodes in a glusterfs pool and a local pool, and acme."""
    admin.fleet.import_spec(SMALL_FLEET)
    nodes = _storage_nodes(admin, cycle)
    gpool = admin.storage_pools.create("fast", node_ids=nodes, replica=2)
    assert gpool["state"] == "creating"
    cycle()
    gpool = admin.storage_pools.get("fast")
    assert gpool["state"] == "ready", gpool
    lpool = admin.storage_pools.create("dev", backend="local", node_ids=[], replica=1)
    assert lpool["state"] == "ready"
    _, acme = tenant_client(admin, "acme")
    return admin, acme, gpool, lpool


def _err(call: Callable[[], Any]) -> ApiError:
    with pytest.raises(ApiError) as info:
        call()
    return info.value


def test_pool_validation_names_the_field(admin: Client, cycle: Cycle) -> None:
    admin.fleet.import_spec(SMALL_FLEET)
    st = _storage_nodes(admin, cycle, 3)
    gpu = admin.nodes.list(role="gpu", limit=1)["data"][0]["id"]
    cases: list[tuple[dict[str, Any], int, str, str]] = [
        ({"node_ids": [st[0]], "replica": 2}, 422, "node_ids", ""),
        ({"node_ids": st, "replica": 2}, 422, "node_ids", ""),
        ({"node_ids": [st[0], gpu], "replica": 2}, 422, "node_ids[1]", "not_a_storage_node"),
        ({"node_ids": [st[0], "node_nope"], "replica": 2}, 422, "node_ids[1]", "node_not_found"),
        ({"node_ids": [st[0], st[0]], "replica": 2}, 422, "node_ids", ""),
        ({"node_ids": [], "replica": 1}, 422, "node_ids", ""),
        ({"node_ids": st[:2], "replica": 4}, 422, "replica", ""),
        ({"node_ids": st[:2], "replica": 2, "backend": "nfs"}, 422, "backend", ""),
    ]
    for over, status, param, code in cases:
        body = {"name": "p1", **over}
        e = _err(lambda body=body: admin.post("storage-pools", body))
        assert (e.status, e.param) == (status, param), (over, e)
        assert not code or e.code == code, (over, e)
    assert admin.storage_pools.list()["data"] == []
    # A node that is not available, and one in another pool, are refused.
    admin.nodes.cordon(st[2], reason="disk swap")
    e = _err(lambda: admin.storage_pools.create("p2", node_ids=[st[2]], replica=1))
    assert (e.status, e.param, e.code) == (422, "node_ids[0]", "node_not_available")
    admin.storage_pools.create("p3", node_ids=st[:2], replica=2)
    e = _err(lambda: admin.storage_pools.create("p4", node_ids=[st[1]], replica=1))
    assert (e.status, e.param, e.code) == (422, "node_ids[0]", "node_in_pool")
    e = _err(lambda: admin.storage_pools.create("p3", node_ids=[], backend="local", replica=1))
    assert (e.status, e.code) == (409, "duplicate_pool_name")


def test_tenants_cannot_make_pools(setup: Any) -> None:
    _, acme, _, _ = setup
    e = _err(lambda: acme.storage_pools.create("mine", node_ids=[], backend="local", replica=1))
    assert (e.status, e.code) == (403, "operator_only")
    assert [p["name"] for p in acme.storage_pools.list()["data"]] == ["fast", "dev"]


def test_filesystem_on_a_simulated_cluster_lifecycle(
    setup: Any, cycle: Cycle, db: Database
) -> None:
    _admin, acme, _, _ = setup
    clu = acme.clusters.create("H100", 2, name="train")
    cycle()
    clu = acme.clusters.get(clu["id"])
    assert clu["state"] == "running"
    fs = acme.filesystems.create("data", size_gib=100, pool="fast")
    assert (fs["state"], fs["size_gib"], fs["pool"], fs["backend"]) == (
        "creating",
        100,
        "fast",
        "glusterfs",
    )
    cycle()
    fs = acme.filesystems.get(fs["id"])
    assert (fs["state"], fs["applied_gib"]) == ("available", 100)
    assert "simulated" in fs["reason"]
    fs = acme.filesystems.attach(fs["id"], cluster_id=clu["id"], mount_path="/mnt/data")
    att = fs["attachments"][0]
    assert (att["state"], att["cluster_id"], att["mount_path"]) == (
        "attaching",
        clu["id"],
        "/mnt/data",
    )
    cycle()
    fs = acme.filesystems.get(fs["id"])
    att = fs["attachments"][0]
    assert att["state"] == "attached", att
    members = {m["id"] for m in acme.instances.list(cluster_id=clu["id"])["data"]}
    assert {m["instance_id"] for m in att["mounts"]} == members
    assert all(m["simulated"] and m["state"] == "mounted" for m in att["mounts"])

    # Resize: down is refused and changes nothing; up is applied.
    e = _err(lambda: acme.filesystems.resize(fs["id"], 50))
    assert (e.status, e.param, e.code) == (422, "size_gib", "shrink_not_supported")
    assert acme.filesystems.get(fs["id"])["size_gib"] == 100
    fs = acme.filesystems.resize(fs["id"], 200)
    assert (fs["size_gib"], fs["applied_gib"]) == (200, 100)
    cycle()
    assert acme.filesystems.get(fs["id"])["applied_gib"] == 200

    # Delete while attached: refused, naming the attachment.
    e = _err(lambda: acme.filesystems.delete(fs["id"]))
    assert (e.status, e.code) == (409, "filesystem_attached")
    assert att["id"] in e.message
    assert e.details["attachments"][0]["cluster_id"] == clu["id"]
    assert acme.filesystems.get(fs["id"])["state"] == "available"

    acme.filesystems.detach(fs["id"], att["id"])
    cycle()
    fs = acme.filesystems.get(fs["id"])
    assert fs["attachments"] == []
    deleted = acme.filesystems.delete(fs["id"])
    assert deleted["state"] == "deleting"
    cycle()
    assert acme.filesystems.get(fs["id"])["state"] == "deleted"
    assert acme.filesystems.list()["data"] == []
    with db.transaction() as s:
        spans = list(
            s.execute(
                sa.select(FsSizeIntervalRow.size_gib, FsSizeIntervalRow.end_at).order_by(
                    FsSizeIntervalRow.id
                )
            )
        )
    assert [size for size, _ in spans] == [100, 200]
    assert all(end is not None for _, end in spans)  # billing stopped at the delete


def test_a_member_that_joins_later_is_mounted(setup: Any, cycle: Cycle) -> None:
    _, acme, _, _ = setup
    inst = acme.instances.create("8xH100")
    cycle()
    fs = acme.filesystems.create("scratch", size_gib=10, pool="dev")
    cycle()
    fs = acme.filesystems.attach(fs["id"], instance_id=inst["id"], mount_path="/data/x")
    cycle()
    fs = acme.filesystems.get(fs["id"])
    assert fs["attachments"][0]["state"] == "attached"
    assert fs["used_bytes"] == 0
    # The instance ends: the attachment ends with it, saying why, and the data stays.
    acme.instances.terminate(inst["id"])
    cycle(4)
    fs = acme.filesystems.get(fs["id"])
    assert fs["attachments"] == []
    assert fs["state"] == "available"


def test_bad_input_is_precise_and_changes_nothing(setup: Any, cycle: Cycle) -> None:
    admin, acme, _, _ = setup
    _, other = tenant_client(admin, "other")
    theirs = other.instances.create("8xH100")
    mine = acme.instances.create("8xH100")
    cycle()
    fs = acme.filesystems.create("data", size_gib=10, pool="dev")
    cycle()
    cases: list[tuple[Callable[[], Any], int, str | None, str]] = [
        (lambda: acme.filesystems.create("a", size_gib=0, pool="dev"), 422, "size_gib", ""),
        (lambda: acme.filesystems.create("a", size_gib=1 << 21, pool="dev"), 422, "size_gib", ""),
        (
            lambda: acme.filesystems.create("a", size_gib=1, pool="nope"),
            422,
            "pool",
            "unknown_pool",
        ),
        (lambda: acme.filesystems.create("bad name!", size_gib=1, pool="dev"), 422, "name", ""),
        (lambda: acme.filesystems.create("data", size_gib=1, pool="dev"), 409, "name", ""),
        (
            lambda: acme.filesystems.attach(
                fs["id"], instance_id=theirs["id"], mount_path="/mnt/d"
            ),
            404,
            "instance_id",
            "instance_not_found",
        ),
        (
            lambda: acme.filesystems.attach(fs["id"], instance_id=mine["id"], mount_path="mnt"),
            422,
            "mount_path",
            "",
        ),
        (
            lambda: acme.filesystems.attach(fs["id"], instance_id=mine["id"], mount_path="/etc/x"),
            422,
            "mount_path",
            "",
        ),
        (
            lambda: acme.filesystems.attach(fs["id"], instance_id=mine["id"], mount_path="/a/../b"),
            422,
            "mount_path",
            "",
        ),
        (
            lambda: acme.filesystems.attach(fs["id"], mount_path="/mnt/d"),
            422,
            "instance_id",
            "",
        ),
        (lambda: acme.filesystems.resize(fs["id"], 5), 422, "size_gib", "shrink_not_supported"),
        (lambda: other.filesystems.get(fs["id"]), 404, "filesystem_id", "filesystem_not_found"),
        (lambda: other.filesystems.delete(fs["id"]), 404, "filesystem_id", ""),
    ]
    before = acme.filesystems.get(fs["id"])
    for i, (call, status, param, code) in enumerate(cases):
        e = _err(call)
        assert (e.status, e.param) == (status, param), (i, e)
        if code:
            assert e.code == code, (i, e)
    after = acme.filesystems.get(fs["id"])
    assert after == before
    assert [f["name"] for f in acme.filesystems.list()["data"]] == ["data"]
    assert other.filesystems.list()["data"] == []


def test_storage_quota(setup: Any, cycle: Cycle) -> None:
    admin, acme, _, _ = setup
    orgs = [o for o in admin.orgs.list()["data"] if o["slug"] == "acme"]
    admin.quotas.set(orgs[0]["id"], "storage-gib", 100)
    fs = acme.filesystems.create("a", size_gib=60, pool="dev")
    e = _err(lambda: acme.filesystems.create("b", size_gib=41, pool="dev"))
    assert (e.status, e.code, e.param) == (403, "quota_exceeded", "size_gib")
    assert e.details["limit"] == 100
    e = _err(lambda: acme.filesystems.resize(fs["id"], 101))
    assert (e.status, e.code) == (403, "quota_exceeded")
    acme.filesystems.create("b", size_gib=40, pool="dev")


def test_a_pool_with_filesystems_is_not_deleted(setup: Any, cycle: Cycle) -> None:
    admin, acme, _, _ = setup
    fs = acme.filesystems.create("a", size_gib=1, pool="dev")
    e = _err(lambda: admin.storage_pools.delete("dev"))
    assert (e.status, e.code) == (409, "pool_in_use")
    assert fs["id"] in e.message
    acme.filesystems.delete(fs["id"])
    cycle()
    assert admin.storage_pools.delete("dev")["state"] == "deleted"
    e = _err(lambda: acme.filesystems.create("c", size_gib=1, pool="dev"))
    assert (e.status, e.param, e.code) == (422, "pool", "unknown_pool")


def test_filesystems_are_billed_per_gib_month_per_second(setup: Any, cycle: Cycle) -> None:
    from decimal import Decimal

    admin, acme, _, _ = setup
    org = next(o for o in admin.orgs.list()["data"] if o["slug"] == "acme")["id"]
    fs = acme.filesystems.create("billed", size_gib=100, pool="dev")
    cycle()
    cycle.clock.advance(86400 - 3)  # a day since it was created (cycle advanced 3 s)
    acme.filesystems.resize(fs["id"], 200)
    cycle.clock.advance(86400)
    acme.filesystems.delete(fs["id"])
    cycle.clock.advance(86400)  # after the delete: nothing more
    preview = acme.invoices.preview(org, "2026-03")
    (line,) = [ln for ln in preview["lines"] if ln["sku"] == "storage.gib_month"]
    gib_hours = Decimal(line["gpu_hours"])
    assert gib_hours == Decimal(100 * 24 + 200 * 24)
    assert "GiB-hours" in line["description"]
    expected = (gib_hours * Decimal("0.08") / 730).quantize(Decimal("0.01"))
    assert Decimal(line["amount"]["amount"]) == expected
    assert line["fact_ids"] == [fs["id"]]
    # A price book can price it (from now: the next period's lines use it).
    book = admin.price_books.publish(
        "2026-03-05T00:00:00Z", gpu_prices={"storage.gib_month": "0.16"}
    )
    assert Decimal(book["gpu_prices"]["storage.gib_month"]) == Decimal("0.16")


def test_a_healed_cluster_member_is_mounted(setup: Any, cycle: Cycle, db: Database) -> None:
    from neocloud.fleet import service as fleet_service
    from neocloud.fleet.domain import CheckStatus
    from neocloud.fleet.service import CheckResult

    _, acme, _, _ = setup
    clu = acme.clusters.create("H100", 2)
    fs = acme.filesystems.create("shared", size_gib=10, pool="fast")
    cycle()
    acme.filesystems.attach(fs["id"], cluster_id=clu["id"], mount_path="/mnt/shared")
    cycle()
    before = acme.filesystems.get(fs["id"])["attachments"][0]
    assert before["state"] == "attached"
    lost = acme.clusters.get(clu["id"])["nodes"][0]
    fleet_service.report_health(
        db=db,
        clock=cycle.clock,
        node_id=lost["node_id"],
        checks=[CheckResult("gpu", CheckStatus.FAIL, "Xid 79")],
    )
    cycle(4)
    clu = acme.clusters.get(clu["id"])
    assert clu["state"] == "running"
    live = {n["instance_id"] for n in clu["nodes"] if n["state"] == "running"}
    assert lost["instance_id"] not in live
    after = acme.filesystems.get(fs["id"])["attachments"][0]
    assert after["state"] == "attached", after
    assert {m["instance_id"] for m in after["mounts"]} == live  # the replacement is mounted
