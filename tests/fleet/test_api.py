"""API and SDK tests on both backends, as the operator admin and as a tenant."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from neocloud.client import ApiError, Client
from neocloud.db.engine import Database
from neocloud.fleet import service
from neocloud.kernel.clock import VirtualClock

from .helpers import GOOD


@pytest.fixture
def fleet(admin: Client) -> Client:
    result = admin.fleet.import_spec(GOOD)
    assert result["nodes_created"] == 17
    return admin


def _special(admin: Client) -> dict:
    return admin.nodes.list(hostname="special-01")["data"][0]


def test_catalog_for_any_caller(admin: Client) -> None:
    models = admin.fleet.gpu_models()
    h100 = next(m for m in models if m["id"] == "H100-SXM-80GB")
    assert h100["tdp_w"] == 700
    assert h100["list_price_per_gpu_hour"]["currency"] == "USD"
    assert admin.get("gpu-models/h200")["id"] == "H200-SXM-141GB"


def test_node_object_and_filters(fleet: Client) -> None:
    node = _special(fleet)
    assert node["object"] == "node"
    assert node["id"].startswith("node_")
    assert node["topology"]["rack"] == "rack-special"
    assert node["capex"] == {"amount": "250000.00", "currency": "USD"}
    assert node["state"] == "available"
    assert node["health"] == "healthy"
    assert node["in_service_at"] is None
    assert fleet.nodes.get(node["id"])["hostname"] == "special-01"
    assert len(fleet.nodes.list(gpu_model="H100", state="available")["data"]) == 17
    assert len(fleet.nodes.list(topology={"rack": "us-east-1a-ib01-b02-r01"})["data"]) == 4
    assert len(fleet.nodes.list(topology={"fabric": "us-east-1a-ib01"}, limit=5)["data"]) == 5
    assert [n["hostname"] for n in fleet.nodes.list(labels={"pool": "research"})["data"]] == [
        "special-01"
    ]
    with pytest.raises(ApiError) as exc:
        fleet.nodes.list(topology={"row": "r1"})
    assert exc.value.status == 422
    assert exc.value.param == "row"
    with pytest.raises(ApiError) as exc:
        fleet.nodes.list(gpu_model="V100")
    assert exc.value.param == "gpu_model"


def test_pagination_walks_every_node(fleet: Client) -> None:
    first = fleet.nodes.list(limit=10)
    assert first["has_more"]
    second = fleet.nodes.list(limit=10, after=first["next_cursor"])
    assert len(second["data"]) == 7
    assert len(list(fleet.nodes.iter())) == 17


def _busy(db: Database, clock: VirtualClock, node_id: str) -> None:
    """What the compute context does when a tenant gets the node."""
    for to in ("allocated", "provisioning", "in_use"):
        service.transition_node(db=db, clock=clock, node_id=node_id, to=to, actor="compute")


def test_actions_and_events(fleet: Client, db: Database, clock: VirtualClock) -> None:
    node_id = _special(fleet)["id"]
    assert fleet.nodes.cordon(node_id, reason="cable")["state"] == "cordoned"
    assert fleet.nodes.uncordon(node_id)["state"] == "available"
    _busy(db, clock, node_id)
    drained = fleet.nodes.drain(node_id)
    assert drained["state"] == "draining"
    assert drained["drain_requested_at"] is not None
    with pytest.raises(ApiError) as exc:
        fleet.nodes.retire(node_id)
    assert exc.value.status == 409
    assert exc.value.code == "illegal_transition"
    assert exc.value.details["allowed"] == [
        "allocated",
        "cordoned",
        "failed",
        "in_use",
        "provisioning",
        "releasing",
    ]
    events = fleet.nodes.events(node_id)["data"]
    assert [e["to_state"] for e in events] == [
        "available",
        "cordoned",
        "available",
        "allocated",
        "provisioning",
        "in_use",
        "draining",
    ]
    assert events[1]["reason"] == "cable"


def test_illegal_transition_names_allowed_states(fleet: Client) -> None:
    node_id = _special(fleet)["id"]
    with pytest.raises(ApiError) as exc:
        fleet.nodes.transition(node_id, "repair")
    assert exc.value.status == 409
    assert exc.value.details["allowed"] == [
        "allocated",
        "cordoned",
        "failed",
        "maintenance",
        "retired",
    ]
    assert "allocated, cordoned" in exc.value.message
    with pytest.raises(ApiError) as exc:
        fleet.nodes.transition(node_id, "in_use")
    assert exc.value.status == 422
    assert exc.value.code == "not_an_operator_move"
    # The operator's own moves go through the same table: maintenance and back.
    node = fleet.nodes.transition(node_id, "maintenance", reason="firmware")
    assert node["state"] == "maintenance"
    assert fleet.nodes.transition(node_id, "available")["state"] == "available"


def test_failing_health_fails_the_node(fleet: Client) -> None:
    node_id = _special(fleet)["id"]
    node = fleet.nodes.report_health(
        node_id, [{"name": "dcgm", "status": "fail", "message": "XID 79"}]
    )
    assert node["state"] == "failed"
    assert node["health"] == "failed"
    assert [n["id"] for n in fleet.nodes.list(health="failed")["data"]] == [node_id]
    history = fleet.nodes.health_checks(node_id)["data"]
    assert [(c["name"], c["status"], c["message"]) for c in history] == [("dcgm", "fail", "XID 79")]
    assert fleet.nodes.events(node_id)["data"][-1]["reason"] == "health check failed: dcgm: XID 79"
    with pytest.raises(ApiError) as exc:
        fleet.nodes.report_health(node_id, [{"name": "dcgm", "status": "broken"}])
    assert exc.value.status == 422


def by_block_lines(fleet: Client, block: str) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = fleet.fleet.summary(group_by="block")["data"]
    return [line for line in lines if line["domain"] == block]


def test_summary_and_topology(fleet: Client) -> None:
    fleet.nodes.cordon(_special(fleet)["id"])
    summary = fleet.fleet.summary()
    assert summary["total_nodes"] == 17
    assert summary["total_gpus"] == 136
    assert summary["by_state"] == {"available": 16, "cordoned": 1}
    assert {line["health"] for line in summary["data"]} == {None}
    with_health = fleet.fleet.summary(health=True)
    assert {(x["state"], x["health"], x["nodes"]) for x in with_health["data"]} == {
        ("available", "healthy", 16),
        ("cordoned", "healthy", 1),
    }
    one_block = fleet.fleet.summary(group_by="rack", within=("block", "us-east-1a-ib01-b01"))
    assert 0 < one_block["total_nodes"] < 17
    assert one_block["total_nodes"] == sum(
        line["nodes"] for line in by_block_lines(fleet, "us-east-1a-ib01-b01")
    )
    with pytest.raises(ApiError) as exc:
        fleet.get("fleet/summary", within="us-east-1a-ib01-b01")
    assert (exc.value.status, exc.value.param) == (422, "within_level")
    with pytest.raises(ApiError) as exc:
        fleet.fleet.summary(within=("row", "r1"))
    assert (exc.value.status, exc.value.param) == (422, "within_level")
    by_block = fleet.fleet.summary(group_by="block")
    assert {line["domain"] for line in by_block["data"]} == {
        "us-east-1a-ib01-b01",
        "us-east-1a-ib01-b02",
    }
    topo = fleet.fleet.topology(level="fabric")
    assert topo["levels"] == ["region", "zone", "fabric", "block", "rack"]
    assert topo["domains"] == [
        {
            "level": "fabric",
            "name": "us-east-1a-ib01",
            "parent": "us-east-1/us-east-1a",
            "nodes": 17,
            "gpus": 136,
        }
    ]


def test_import_errors(fleet: Client) -> None:
    with pytest.raises(ApiError) as exc:
        fleet.fleet.import_spec(GOOD)
    assert exc.value.status == 409
    assert "us-east-1a-ib01-b01-r01-n01" in exc.value.message
    with pytest.raises(ApiError) as exc:
        fleet.fleet.import_spec(GOOD.replace("gpu_count: 8", "gpu_count: lots"))
    assert exc.value.status == 422
    assert exc.value.param == "templates.h100-8x.gpu_count"
    assert "line 6" in exc.value.message
    assert fleet.fleet.summary()["total_nodes"] == 17
    # JSON body works too
    result = fleet.post(
        "fleet/imports",
        {
            "spec": GOOD.replace("us-east-1", "eu-west-1")
            .replace("special-01", "special-eu")
            .replace("rack-special", "rack-special-eu"),
            "initial_state": "burn_in",
        },
    )
    assert result["nodes_created"] == 17
    assert result["initial_state"] == "burn_in"


def test_tenants_get_403(fleet: Client) -> None:
    org = fleet.orgs.create("Acme", slug="acme", owner_email="owner@acme.example")
    user = next(u for u in fleet.users.list(org["id"])["data"])
    key = fleet.keys.create("k", org_id=org["id"], user_id=user["id"])
    http = fleet._http
    assert isinstance(http, TestClient)
    tenant = Client(api_key=key["secret"], http=TestClient(http.app), retries=0)
    assert tenant.fleet.gpu_models()  # the catalog is public to any caller
    for call in (
        lambda: tenant.nodes.list(),
        lambda: tenant.fleet.summary(),
        lambda: tenant.fleet.import_spec(GOOD),
        lambda: tenant.nodes.cordon(_special(fleet)["id"]),
    ):
        with pytest.raises(ApiError) as exc:
            call()
        assert exc.value.status == 403


def test_node_list_filters_are_bounded(fleet: Client) -> None:
    """Each label or topology filter is a join: a caller cannot send thousands of them."""
    sixteen = {f"k{i}": "v" for i in range(16)}
    assert fleet.nodes.list(labels=sixteen, limit=1)["data"] == []
    for filters in (
        {"labels": {f"k{i}": "v" for i in range(17)}},
        {"labels": {"k": "v" * 400}},
        {"topology": {f"level{i}": "x" for i in range(17)}},
    ):
        with pytest.raises(ApiError) as caught:
            fleet.nodes.list(**filters)
        assert caught.value.status == 422
        assert caught.value.param in {"label", "topology"}
