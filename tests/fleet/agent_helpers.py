"""Shared pieces of the node agent tests: a small fleet, a tenant, heartbeat bodies."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from neocloud.client import Client

FLEET = """\
version: 1
levels: [region, zone, fabric, block, rack]
templates:
  h100-8x:
    gpu_model: h100
    gpu_count: 8
    vcpus: 224
    ram_gib: 2048
    nvme_tib: 30
sites:
  - region: us-east-1
    zone: us-east-1a
    fabrics:
      - name: us-east-1a-ib01
        template: h100-8x
        blocks: 2
        racks_per_block: 2
        nodes_per_rack: 2
"""
H100_NAME = "NVIDIA H100 80GB HBM3"


def tenant(admin: Client, slug: str) -> tuple[str, Client]:
    """An org with a 64-GPU H100 quota and its owner's SDK client."""
    org = admin.orgs.create(slug.title(), slug=slug, owner_email=f"owner@{slug}.example")
    user = admin.users.list(org["id"])["data"][0]
    key = admin.keys.create("owner key", org_id=org["id"], user_id=user["id"])
    admin.quotas.set(org["id"], "H100-SXM-80GB", 64)
    http = TestClient(admin._http.app, raise_server_exceptions=False)
    return org["id"], Client(api_key=key["secret"], http=http, retries=0)


def gpu(index: int, **over: Any) -> dict[str, Any]:
    sample: dict[str, Any] = {
        "index": index,
        "utilization_pct": 50.0,
        "memory_used_mib": 1000,
        "temperature_c": 60.0,
        "power_w": 300.0,
        "sm_clock_mhz": 1980,
        "ecc_correctable": 0,
        "ecc_uncorrectable": 0,
        "retired_pages": 0,
        "remap_failed": False,
        "throttle": [],
        "xid": [],
    }
    return sample | over


def inventory(count: int = 8, name: str = H100_NAME) -> dict[str, Any]:
    return {
        "driver_version": "550.54.15",
        "cuda_version": "12.4",
        "gpus": [
            {
                "index": i,
                "uuid": f"GPU-{i:08d}-0000-0000-0000-000000000000",
                "serial": f"165{i:010d}",
                "name": name,
                "memory_total_mib": 81559,
                "pci_bus_id": f"00000000:{i + 0x18:02X}:00.0",
                "nvlink_active": 18,
            }
            for i in range(count)
        ],
    }


def beat(node_id: str, *, telemetry: list[dict[str, Any]] | None = None, **over: Any) -> Any:
    body: dict[str, Any] = {
        "node_id": node_id,
        "agent_version": "0.1.0",
        "simulated": True,
        "sent_at": "2026-03-01T12:00:00Z",
        "inventory": None,
        "telemetry": [gpu(i) for i in range(8)] if telemetry is None else telemetry,
        "checks": [],
    }
    return body | over


def send(http: TestClient, token: str, body: Any) -> Any:
    return http.post(
        "/api/v1/agent/heartbeat", json=body, headers={"Authorization": f"Bearer {token}"}
    )
