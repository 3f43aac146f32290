"""The example fleet, loaded the way the CLI loads it."""

from __future__ import annotations

from pathlib import Path

from neocloud.client import Client
from neocloud.economics import Scenario, load_yaml, parse_scenario

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "economics" / "h100-1024.yaml"


def example() -> Scenario:
    return parse_scenario(load_yaml(EXAMPLE.read_text(), source=str(EXAMPLE)))


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
    capex: "250000.00"
    book_life_years: 5
sites:
  - region: us-east-1
    zone: us-east-1a
    fabrics:
      - name: us-east-1a-ib01
        template: h100-8x
        blocks: 1
        racks_per_block: 1
        nodes_per_rack: 4
        in_service: 2026-01-15
"""


def tenant_client(admin: Client, slug: str, *, h100_quota: int | None = None) -> Client:
    """The owner of a new tenant org, as an SDK client on the same app."""
    from fastapi.testclient import TestClient

    org = admin.orgs.create(slug.title(), slug=slug, owner_email=f"owner@{slug}.example")  # type: ignore[attr-defined]
    users = admin.users.list(org["id"])["data"]  # type: ignore[attr-defined]
    key = admin.keys.create("owner key", org_id=org["id"], user_id=users[0]["id"])  # type: ignore[attr-defined]
    if h100_quota is not None:
        admin.quotas.set(org["id"], "H100-SXM-80GB", h100_quota)  # type: ignore[attr-defined]
    http = admin._http
    assert isinstance(http, TestClient)
    return Client(api_key=key["secret"], http=TestClient(http.app), retries=0)
