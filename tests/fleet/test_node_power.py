"""``nodes power`` and ``nodes inspect`` on simulated nodes (real BMCs and SSH:
tests/nodes/test_redfish_nodes.py): the simulator's power and inventory say ``simulated``;
the refusals (a tenant's workload on the node, a retired node, an unknown one, a bad action)
are precise; a tenant cannot do either."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from neocloud.client import ApiError, Client
from neocloud.db.engine import Database
from neocloud.fleet.tables import NodeRow

from .helpers import GOOD


@pytest.fixture
def node(admin: Client) -> dict[str, Any]:
    admin.fleet.import_spec(GOOD)
    found: dict[str, Any] = admin.nodes.list(hostname="special-01")["data"][0]
    return found


def test_a_simulated_node_powers_and_answers_its_declared_facts(
    admin: Client, node: dict[str, Any], app: Any
) -> None:
    for action in ("off", "on", "reset"):
        result = admin.nodes.power(node["id"], action)
        assert result["object"] == "node_power"
        assert result["action"] == action
        assert result["simulated"] is True
        assert result["driver"] == "sim"
    calls = [c[0] for c in app.state.drivers.by_name["sim"].calls]
    assert calls == ["power"] * 4  # off, on, and reset as off then on
    seen = admin.nodes.inspect(node["id"])
    assert seen["object"] == "node_inventory"
    assert seen["source"] == "declared"
    assert seen["simulated"] is True
    assert seen["inventory"] == {
        "hostname": "special-01",
        "gpu_model": node["gpu_model"],
        "gpu_count": node["gpu_count"],
        "vcpus": node["vcpus"],
        "ram_gib": node["ram_gib"],
        "nvme_gib": node["nvme_gib"],
    }


@pytest.mark.parametrize("state", ["allocated", "provisioning", "in_use", "wiping", "draining"])
def test_a_tenants_node_is_not_powered_off_without_force(
    admin: Client, node: dict[str, Any], db: Database, state: str
) -> None:
    with db.transaction() as s:
        row = s.get(NodeRow, node["id"])
        assert row is not None
        row.state = state
    with pytest.raises(ApiError) as exc:
        admin.nodes.power(node["id"], "off")
    assert exc.value.status == 409
    assert exc.value.code == "node_in_use"
    assert state in exc.value.message
    assert admin.nodes.power(node["id"], "on")["forced"] is False
    assert admin.nodes.power(node["id"], "reset", force=True)["forced"] is True


def test_refusals_are_precise(admin: Client, node: dict[str, Any], http: TestClient) -> None:
    admin.nodes.retire(node["id"])
    with pytest.raises(ApiError) as exc:
        admin.nodes.power(node["id"], "on")
    assert (exc.value.status, exc.value.code) == (409, "node_retired")
    with pytest.raises(ApiError) as missing:
        admin.nodes.power("node_nope", "on")
    assert missing.value.status == 404
    with pytest.raises(ApiError) as gone:
        admin.nodes.inspect("node_nope")
    assert gone.value.status == 404
    for body, param in (
        ({"action": "cycle"}, "action"),
        ({}, "action"),
        ({"action": "off", "force": "yes"}, "force"),
        ({"action": "off", "extra": 1}, "extra"),
    ):
        with pytest.raises(ApiError) as bad:
            admin.request("POST", f"nodes/{node['id']}/power", json=body)
        assert bad.value.status == 422, body
        assert bad.value.param == param, body


def test_tenants_can_neither_power_nor_inspect(
    admin: Client, node: dict[str, Any], http: TestClient
) -> None:
    r = http.post(f"/api/v1/nodes/{node['id']}/power", json={"action": "off"})
    assert r.status_code == 401
    r = http.get(f"/api/v1/nodes/{node['id']}/inspect")
    assert r.status_code == 401
