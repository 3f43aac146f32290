"""The node agent's API on both backends: tokens, heartbeats, health, telemetry, tenant metrics."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from neocloud.client import ApiError, Client
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database
from neocloud.drivers.sim import SimDriver
from neocloud.fleet.tables import (
    AgentTokenRow,
    GpuTelemetryLatestRow,
    GpuTelemetrySeriesRow,
    HealthCheckRow,
)
from neocloud.kernel.clock import VirtualClock

from .agent_helpers import FLEET, beat, gpu, inventory, send, tenant


@pytest.fixture
def fleet(admin: Client) -> Client:
    assert admin.fleet.import_spec(FLEET)["nodes_created"] == 8
    return admin


@pytest.fixture
def worker(db: Database, clock: VirtualClock) -> Worker:
    return Worker(db, clock, driver=SimDriver(seed=1), holder="test-worker")


@pytest.fixture
def http(fleet: Client) -> TestClient:
    return TestClient(fleet._http.app, raise_server_exceptions=False)


def _nodes(admin: Client) -> list[str]:
    return [n["id"] for n in admin.nodes.list()["data"]]


def test_token_reports_only_for_its_own_node(fleet: Client, http: TestClient, db: Database) -> None:
    a, b = _nodes(fleet)[:2]
    made = fleet.nodes.issue_agent_token(a)
    token = made["token"]
    assert token.startswith("nca_")
    assert made["node_id"] == a
    with db.transaction() as s:  # kept as a hash only
        row = s.get(AgentTokenRow, a)
        assert row is not None
        assert token not in (row.token_hash, row.prefix)
    ok = send(http, token, beat(a, inventory=inventory()))
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"interval_s": 10.0, "node_state": "available", "run_active_checks": True}
    wrong = send(http, token, beat(b))
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (403, "agent_wrong_node")


def test_tokens_are_not_api_keys(fleet: Client, http: TestClient, admin_key: str) -> None:
    node = _nodes(fleet)[0]
    token = fleet.nodes.issue_agent_token(node)["token"]
    refused = send(http, admin_key, beat(node))  # an API key, even the operator's
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "agent_token_required")
    for path in ("/api/v1/nodes", "/api/v1/me", f"/api/v1/nodes/{node}/health"):
        got = http.get(path, headers={"Authorization": f"Bearer {token}"})
        assert got.status_code == 401, (path, got.text)
    assert http.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert http.post("/api/v1/agent/heartbeat", json=beat(node)).status_code == 401


def test_reissue_and_revoke(fleet: Client, http: TestClient) -> None:
    node = _nodes(fleet)[0]
    old = fleet.nodes.issue_agent_token(node)["token"]
    new = fleet.nodes.issue_agent_token(node)["token"]
    assert send(http, old, beat(node)).status_code == 401  # one live token per node
    assert send(http, new, beat(node)).status_code == 200
    fleet.nodes.revoke_agent_token(node)
    gone = send(http, new, beat(node))
    assert (gone.status_code, gone.json()["error"]["code"]) == (401, "invalid_agent_token")
    with pytest.raises(ApiError) as info:
        fleet.nodes.revoke_agent_token(node)
    assert (info.value.status, info.value.code) == (404, "agent_token_not_found")
    with pytest.raises(ApiError) as info:
        fleet.nodes.issue_agent_token("node_nope")
    assert info.value.status == 404


def test_a_replayed_issue_never_returns_the_token(
    fleet: Client, http: TestClient, admin_key: str
) -> None:
    node = _nodes(fleet)[0]
    headers = {"Authorization": f"Bearer {admin_key}", "Idempotency-Key": "tok-1"}
    first = http.post(f"/api/v1/nodes/{node}/agent-token", headers=headers)
    again = http.post(f"/api/v1/nodes/{node}/agent-token", headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["token"].startswith("nca_")
    assert again.json()["token"] is None


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"telemetry": [gpu(0, utilization_pct=101)]}, "telemetry[0].utilization_pct"),
        ({"telemetry": [gpu(i) for i in range(17)]}, "telemetry"),
        ({"agent_version": "x" * 33}, "agent_version"),
        ({"checks": [{"name": "gemm", "status": "bad"}]}, "checks[0].status"),
        ({"sent_at": "yesterday"}, "sent_at"),
        ({"telemetry": [gpu(0, throttle=["a"] * 9)]}, "telemetry[0].throttle"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_heartbeats_are_422_naming_the_field(
    fleet: Client, http: TestClient, change: dict, param: str
) -> None:
    node = _nodes(fleet)[0]
    token = fleet.nodes.issue_agent_token(node)["token"]
    got = send(http, token, beat(node) | change)
    assert got.status_code == 422, got.text
    assert got.json()["error"]["param"] == param


def test_node_health_shows_inventory_telemetry_and_history(
    fleet: Client, http: TestClient, clock: VirtualClock, db: Database
) -> None:
    node = _nodes(fleet)[0]
    token = fleet.nodes.issue_agent_token(node)["token"]
    hot = [gpu(i, temperature_c=92.0 if i == 3 else 60.0) for i in range(8)]
    assert send(http, token, beat(node, inventory=inventory(), telemetry=hot)).status_code == 200
    for _ in range(3):  # steady beats write no more history
        clock.advance(10)
        assert send(http, token, beat(node, telemetry=hot)).status_code == 200
    h = fleet.nodes.health(node)
    assert (h["state"], h["health"]) == ("available", "warning")
    assert h["checks"]["gpu.temp"]["status"] == "warn"
    assert "gpu 3: 92 °C" in h["checks"]["gpu.temp"]["message"]
    assert h["agent"]["version"] == "0.1.0"
    assert h["agent"]["simulated"] is True
    assert len(h["agent"]["inventory"]["gpus"]) == 8
    assert [t["gpu_index"] for t in h["telemetry"]] == list(range(8))
    assert h["telemetry"][0]["uuid"].startswith("GPU-00000000")
    with db.transaction() as s:
        written = s.scalar(sa.select(sa.func.count()).select_from(HealthCheckRow))
    assert written == len(h["history"]) == 8  # one per rule and the heartbeat, once
    clock.advance(10)  # it cools down: the warning clears, one row more
    assert send(http, token, beat(node)).status_code == 200
    h = fleet.nodes.health(node)
    assert h["health"] == "healthy"
    assert h["history"][0]["name"] == "gpu.temp"
    summary = fleet.fleet.summary()
    assert summary["total_nodes"] == 8


def test_idle_node_only_runs_active_checks(fleet: Client, http: TestClient, worker: Worker) -> None:
    _, acme = tenant(fleet, "acme")
    inst = acme.instances.create("8xH100")
    worker.run_once()
    node = acme.instances.get(inst["id"])["node_id"]
    token = fleet.nodes.issue_agent_token(node)["token"]
    got = send(http, token, beat(node)).json()
    assert got["node_state"] == "in_use"
    assert got["run_active_checks"] is False


def test_uncorrectable_ecc_fails_the_node_and_its_instance(
    fleet: Client, http: TestClient, worker: Worker
) -> None:
    _, acme = tenant(fleet, "acme")
    inst = acme.instances.create("8xH100")
    worker.run_once()
    node = acme.instances.get(inst["id"])["node_id"]
    token = fleet.nodes.issue_agent_token(node)["token"]
    bad = [gpu(i, ecc_uncorrectable=2 if i == 5 else 0) for i in range(8)]
    assert send(http, token, beat(node, telemetry=bad)).status_code == 200
    got = fleet.nodes.get(node)
    assert (got["state"], got["health"]) == ("failed", "failed")
    assert "gpu 5: uncorrectable ECC errors" in got["state_reason"]
    worker.run_once()
    inst = acme.instances.get(inst["id"])
    assert (inst["state"], inst["state_reason"]) == ("failed", "node_failed")


def test_a_lost_gpu_fails_a_cluster_member_which_is_replaced(
    fleet: Client, http: TestClient, worker: Worker
) -> None:
    _, acme = tenant(fleet, "acme")
    c = acme.clusters.create("H100", 3)
    worker.run_once()
    c = acme.clusters.get(c["id"])
    lost = c["nodes"][0]["node_id"]
    token = fleet.nodes.issue_agent_token(lost)["token"]
    seven = [gpu(i) for i in range(7)]
    assert send(http, token, beat(lost, inventory=inventory(7), telemetry=seven)).status_code == 200
    assert fleet.nodes.get(lost)["state"] == "failed"
    worker.run_once()
    assert acme.clusters.get(c["id"])["state"] == "degraded"
    worker.run_once()
    c = acme.clusters.get(c["id"])
    live = [n for n in c["nodes"] if n["state"] == "running"]
    assert c["state"] == "running"
    assert len(live) == 3
    assert lost not in {n["node_id"] for n in live}


def test_wrong_model_fails_the_node(fleet: Client, http: TestClient) -> None:
    node = _nodes(fleet)[0]
    token = fleet.nodes.issue_agent_token(node)["token"]
    body = beat(node, inventory=inventory(name="NVIDIA A100-SXM4-80GB"))
    assert send(http, token, body).status_code == 200
    got = fleet.nodes.health(node)
    assert got["state"] == "failed"
    assert "registered as H100-SXM-80GB" in got["checks"]["gpu.model"]["message"]


def test_series_is_one_row_per_bucket(
    fleet: Client, http: TestClient, clock: VirtualClock, db: Database
) -> None:
    node = _nodes(fleet)[0]
    token = fleet.nodes.issue_agent_token(node)["token"]
    start = clock.now()  # 12:00:00, a bucket boundary
    for i in range(12):  # two 60 s buckets of six beats, then one in a third
        t = [gpu(g, utilization_pct=float(10 * (i % 6)), power_w=100.0 + i) for g in range(2)]
        assert send(http, token, beat(node, telemetry=t)).status_code == 200
        clock.advance(10)
    with db.transaction() as s:
        rows = list(s.scalars(sa.select(GpuTelemetrySeriesRow).order_by("bucket_at", "gpu_index")))
        latest = s.scalar(sa.select(sa.func.count()).select_from(GpuTelemetryLatestRow))
    assert latest == 2
    assert [(r.bucket_at, r.gpu_index) for r in rows] == [(start, 0), (start, 1)]
    assert rows[0].samples == 6
    assert rows[0].utilization_avg == pytest.approx(25.0)
    assert rows[0].utilization_max == 50.0
    assert rows[0].power_max_w == 105.0
    assert send(http, token, beat(node, telemetry=[gpu(0)])).status_code == 200  # 12:02:00
    with db.transaction() as s:
        count = s.scalar(sa.select(sa.func.count()).select_from(GpuTelemetrySeriesRow))
    assert count == 3  # gpu 0's second bucket closed; gpu 1's still open


def test_tenant_metrics_are_its_own_gpus_only(
    fleet: Client, http: TestClient, worker: Worker, clock: VirtualClock
) -> None:
    _, acme = tenant(fleet, "acme")
    _, other = tenant(fleet, "other")
    inst = acme.instances.create("2xH100")
    worker.run_once()
    inst = acme.instances.get(inst["id"])
    node, held = inst["node_id"], inst["gpu_indices"]
    token = fleet.nodes.issue_agent_token(node)["token"]
    for _ in range(7):
        assert send(http, token, beat(node)).status_code == 200
        clock.advance(10)
    m = acme.instances.metrics(inst["id"])
    assert m["object"] == "instance_metrics"
    assert m["gpu_indices"] == held
    assert {t["gpu_index"] for t in m["latest"]} == set(held)
    assert {p["gpu_index"] for p in m["series"]} == set(held)
    assert m["series"][0]["samples"] == 6
    since = (clock.now() - timedelta(seconds=40)).isoformat()  # the open bucket only
    assert {p["samples"] for p in acme.instances.metrics(inst["id"], since=since)["series"]} == {1}
    with pytest.raises(ApiError) as info:
        other.instances.metrics(inst["id"])
    assert info.value.status == 404
    assert fleet.instances.metrics(inst["id"])["latest"]  # the operator sees it
