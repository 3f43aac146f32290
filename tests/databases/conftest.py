"""Fixtures of the databases tests: an available simulated service node offering PostgreSQL 15,
and tenant orgs with a key each."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from neocloud.client import Client
from neocloud.databases.tables import DatabaseHostRow
from neocloud.db.engine import Database
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.clock import VirtualClock


def tenant_client(admin: Client, slug: str) -> tuple[dict[str, Any], Client]:
    """An org whose owner holds a key; returns (org, SDK client)."""
    from fastapi.testclient import TestClient

    org = admin.orgs.create(slug.title(), slug=slug, owner_email=f"owner@{slug}.example")
    user = admin.users.list(org["id"])["data"][0]
    key = admin.keys.create("owner key", org_id=org["id"], user_id=user["id"])
    http = TestClient(admin._http.app, raise_server_exceptions=False)
    return org, Client(api_key=key["secret"], http=http, retries=0)


TOPOLOGY = {"region": "r", "zone": "z", "fabric": "f", "block": "b", "rack": "k"}


@pytest.fixture
def service_node(admin: Client, db: Database, clock: VirtualClock) -> str:
    """An available service node (sim driver) whose probe found PostgreSQL 15."""
    node = admin.nodes.add(
        "svc-1.example",
        vcpus=16,
        ram_gib=64,
        nvme_gib=500,
        topology=dict(TOPOLOGY),
        driver="sim",
        role="service",
    )
    with db.transaction() as s:
        s.execute(sa.update(NodeRow).where(NodeRow.id == node["id"]).values(state="available"))
        s.add(DatabaseHostRow(node_id=node["id"], versions=["15"], probed_at=clock.now()))
    return str(node["id"])


@pytest.fixture
def acme(admin: Client) -> Client:
    return tenant_client(admin, "acme")[1]
