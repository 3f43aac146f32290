"""/metrics: the operator's Prometheus exposition, parsed as Prometheus would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from neocloud.api.app import create_app
from neocloud.client import Client
from neocloud.db.engine import Database
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.settings import Settings

FLEET = """\
version: 1
levels: [region, zone, fabric, block, rack]
templates:
  h100-8x: {gpu_model: h100, gpu_count: 8, vcpus: 224, ram_gib: 2048, nvme_tib: 30}
sites:
  - region: r1
    zone: z1
    fabrics:
      - {name: f1, template: h100-8x, blocks: 1, racks_per_block: 1, nodes_per_rack: 2}
"""
DCGM = (
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_SM_CLOCK",
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
    "DCGM_FI_DEV_XID_ERRORS",
)


def _heartbeat(http: TestClient, admin: Client, node: str) -> None:
    token = admin.nodes.issue_agent_token(node)["token"]
    gpus: list[dict[str, Any]] = [
        {
            "index": i,
            "utilization_pct": 75.0,
            "memory_used_mib": 4096,
            "temperature_c": 65.0,
            "power_w": 500.0,
            "sm_clock_mhz": 1980,
            "ecc_uncorrectable": 0,
        }
        for i in range(8)
    ]
    inventory = {
        "gpus": [
            {
                "index": i,
                "uuid": f"GPU-{i}",
                "name": "NVIDIA H100 80GB HBM3",
                "memory_total_mib": 81559,
            }
            for i in range(8)
        ]
    }
    body = {
        "node_id": node,
        "agent_version": "0.1.0",
        "simulated": True,
        "sent_at": "2026-03-01T12:00:00Z",
        "inventory": inventory,
        "telemetry": gpus,
    }
    got = http.post(
        "/api/v1/agent/heartbeat", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert got.status_code == 200, got.text


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_metrics_parse_and_carry_dcgm_names(admin: Client, admin_key: str, app: Any) -> None:
    admin.fleet.import_spec(FLEET)
    http = TestClient(app, raise_server_exceptions=False)
    node = admin.nodes.list()["data"][0]
    _heartbeat(http, admin, node["id"])
    got = http.get("/metrics", headers={"Authorization": f"Bearer {admin_key}"})
    assert got.status_code == 200, got.text
    assert got.headers["content-type"].startswith("text/plain")
    families = _families(got.text)
    for name in DCGM:
        assert name in families, name
    util = families["DCGM_FI_DEV_GPU_UTIL"].samples
    assert len(util) == 8
    labels = util[0].labels
    assert labels["Hostname"] == node["hostname"]
    assert labels["modelName"] == "NVIDIA H100 SXM 80GB"
    assert labels["UUID"] == "GPU-0"
    assert labels["gpu"] == "0"
    assert util[0].value == 75.0
    nodes = {
        (s.labels["state"], s.labels["health"]): s.value for s in families["neocloud_nodes"].samples
    }
    assert nodes == {("available", "healthy"): 2.0}
    assert families["neocloud_agents_reporting"].samples[0].value == 1.0
    assert "neocloud_api_request_duration_seconds" in families
    assert "neocloud_scheduler_cycle_seconds" in families


def test_metrics_need_an_operator_key(admin: Client, app: Any) -> None:
    http = TestClient(app, raise_server_exceptions=False)
    org = admin.orgs.create("Acme", slug="acme", owner_email="owner@acme.example")
    user = admin.users.list(org["id"])["data"][0]
    tenant = admin.keys.create("k", org_id=org["id"], user_id=user["id"])["secret"]
    assert http.get("/metrics").status_code == 401
    assert http.get("/metrics", headers={"Authorization": f"Bearer {tenant}"}).status_code == 403


def test_metrics_may_be_public(db: Database, clock: VirtualClock, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, key_touch_interval_s=0, metrics_public=True)
    with TestClient(create_app(settings=settings, db=db, clock=clock)) as http:
        got = http.get("/metrics")
    assert got.status_code == 200
    assert "neocloud_nodes" in _families(got.text) or "neocloud_gpus" in _families(got.text)
