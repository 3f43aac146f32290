"""Shared test data for the compute tests."""

from __future__ import annotations

# 8 H100 nodes: one fabric, 2 blocks x 2 racks x 2 nodes.
SMALL_FLEET = """\
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


def tenant_client(admin, slug: str, *, quota: int | None = 64):  # type: ignore[no-untyped-def]
    """An org whose owner holds a key, with an H100 quota; returns (org, SDK client)."""
    from fastapi.testclient import TestClient

    from neocloud.client import Client

    org = admin.orgs.create(slug.title(), slug=slug, owner_email=f"owner@{slug}.example")
    user = admin.users.list(org["id"])["data"][0]
    key = admin.keys.create("owner key", org_id=org["id"], user_id=user["id"])
    if quota is not None:
        admin.quotas.set(org["id"], "H100-SXM-80GB", quota)
    http = TestClient(admin._http.app, raise_server_exceptions=False)
    return org, Client(api_key=key["secret"], http=http, retries=0)
