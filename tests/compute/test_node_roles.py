"""Node roles: storage and service nodes register through the same API, driver and burn-in as
GPU nodes (burn-in skips the GPU check and says so), have no GPUs, and never reach placement:
a tenant never gets one, whatever capacity runs out."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from neocloud.client import ApiError, Client
from neocloud.compute.snapshot import load_snapshot, node_eligible
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database
from neocloud.fleet import service
from neocloud.kernel.clock import VirtualClock

from .helpers import tenant_client

TOPOLOGY = {
    "region": "us-east-1",
    "zone": "us-east-1a",
    "fabric": "us-east-1a-ib01",
    "block": "us-east-1a-ib01-st",
    "rack": "us-east-1a-ib01-st-r01",
}


def _add(admin: Client, hostname: str, role: str, **over: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "vcpus": 32,
        "ram_gib": 256,
        "nvme_gib": 8000,
        "topology": dict(TOPOLOGY),
        "driver": "sim",
        "role": role,
    }
    args.update(over)
    return admin.nodes.add(hostname, **args)


def test_storage_and_service_nodes_pass_burn_in_and_never_reach_a_tenant(
    fleet: Client, db: Database, clock: VirtualClock, worker: Worker
) -> None:
    storage = [_add(fleet, f"st-{i}.example", "storage") for i in (1, 2)]
    svc = _add(fleet, "svc-1.example", "service")
    for node in (*storage, svc):
        assert (node["gpu_model"], node["gpu_count"]) == ("none", 0)
        assert node["state"] == "enrolled"
    assert {n["role"] for n in storage} == {"storage"}
    assert svc["role"] == "service"

    worker.run_once()  # power
    clock.advance(600)
    worker.run_once()  # health: passes, the GPU check skipped
    for node in (*storage, svc):
        got = fleet.nodes.get(node["id"])
        assert (got["state"], got["health"]) == ("available", "healthy")
        gpu = got["health_checks"]["burn_in.gpu"]
        assert gpu["status"] == "pass"
        assert "skipped" in gpu["message"]
        assert "no GPUs" in gpu["message"]

    # Listing by role.
    assert {n["id"] for n in fleet.nodes.list(role="storage")["data"]} == {n["id"] for n in storage}
    assert [n["id"] for n in fleet.nodes.list(role="service")["data"]] == [svc["id"]]
    assert len(fleet.nodes.list(role="gpu", limit=100)["data"]) == 8
    with pytest.raises(ApiError) as bad:
        fleet.nodes.list(role="database")
    assert (bad.value.status, bad.value.param) == (422, "role")

    # Never in placement's snapshot, never eligible.
    with db.transaction() as s:
        snap = load_snapshot(s, clock.now())
        assert not {n["id"] for n in (*storage, svc)} & set(snap.nodes)
        assert len(snap.nodes) == 8
    for node in (*storage, svc):
        assert not node_eligible(service.get_node(db=db, node_id=node["id"]))

    # The fleet's GPU figures are unchanged: 64 GPUs, the platform's nodes counted apart.
    summary = fleet.fleet.summary()
    assert (summary["total_nodes"], summary["total_gpus"]) == (11, 64)
    none_lines = [x for x in summary["data"] if x["gpu_model"] == "none"]
    assert sum(x["nodes"] for x in none_lines) == 3
    assert sum(x["gpus"] for x in none_lines) == 0

    # A tenant fills every GPU node; the next request finds no capacity rather than a
    # storage or service node.
    _, acme = tenant_client(fleet, "acme", quota=80)
    made = [acme.instances.create("8xH100") for _ in range(8)]
    worker.run_once()
    for inst in made:
        got = acme.instances.get(inst["id"])
        assert got["state"] == "running"
        assert got["node_id"] not in {n["id"] for n in (*storage, svc)}
    extra = acme.instances.create("1xH100")
    worker.run_once()
    got = acme.instances.get(extra["id"])
    assert (got["state"], got["state_reason"]) == ("failed", "no_capacity")
    for node in (*storage, svc):
        assert fleet.nodes.get(node["id"])["state"] == "available"


def test_gpus_are_refused_for_a_storage_node_and_required_for_a_gpu_node(
    http: TestClient, admin_key: str, db: Database
) -> None:
    base: dict[str, Any] = {
        "hostname": "n-1.example",
        "vcpus": 8,
        "ram_gib": 64,
        "topology": dict(TOPOLOGY),
        "driver": "sim",
    }
    cases = [
        ({"role": "storage", "gpu_model": "H100"}, "gpu_model"),
        ({"role": "service", "gpu_count": 2}, "gpu_count"),
        ({"role": "gpu", "gpu_count": 8}, "gpu_model"),
        ({"gpu_model": "H100"}, "gpu_count"),  # role defaults to gpu
        ({"gpu_model": "H100", "gpu_count": 0}, "gpu_count"),
        ({"role": "database"}, "role"),
    ]
    for over, param in cases:
        r = http.post(
            "/api/v1/nodes",
            json={**base, **over},
            headers={"Authorization": f"Bearer {admin_key}"},
        )
        assert r.status_code == 422, (over, r.text)
        assert r.json()["error"]["param"] == param, (over, r.text)
    assert service.count_nodes(db=db) == 0
    # "none" with 0 GPUs is the stored form and is accepted as input too.
    r = http.post(
        "/api/v1/nodes",
        json={**base, "role": "storage", "gpu_model": "none", "gpu_count": 0},
        headers={"Authorization": f"Bearer {admin_key}"},
    )
    assert r.status_code == 201, r.text
    assert (r.json()["role"], r.json()["gpu_model"], r.json()["gpu_count"]) == (
        "storage",
        "none",
        0,
    )
