"""Instances end to end through the API and the worker, on both backends."""

from __future__ import annotations

import pytest

from neocloud.client import ApiError, Client
from neocloud.compute.worker import Worker
from neocloud.kernel.clock import VirtualClock

from .helpers import tenant_client


def _error(call, *args, **kwargs) -> ApiError:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as info:
        call(*args, **kwargs)
    return info.value


def test_instance_types_have_prices_and_availability(acme: Client) -> None:
    types = {t["id"]: t for t in acme.instance_types.list()}
    h100 = types["8xH100"]
    assert (h100["gpus"], h100["whole_node"]) == (8, True)
    assert h100["price_per_hour"]["on_demand"] == {"amount": "23.92", "currency": "USD"}
    assert h100["price_per_hour"]["spot"] == {"amount": "14.32", "currency": "USD"}
    assert h100["availability"]["on_demand"] == "high"
    assert types["1xH200"]["availability"]["on_demand"] == "none"  # no H200 in this fleet
    assert "4xGB200" in types
    assert "8xGB200" not in types
    assert [t["id"] for t in acme.instance_types.list(gpu_model="h100")] == [
        "1xH100",
        "2xH100",
        "4xH100",
        "8xH100",
    ]


def test_create_runs_and_terminates(acme: Client, worker: Worker) -> None:
    inst = acme.instances.create("8xH100", name="train-1")
    assert (inst["object"], inst["state"], inst["class"]) == ("instance", "pending", "on_demand")
    assert inst["id"].startswith("inst_")
    worker.run_once()
    got = acme.instances.get(inst["id"])
    assert got["state"] == "running"
    assert got["node_id"].startswith("node_")
    assert got["gpu_indices"] == list(range(8))
    done = acme.instances.terminate(inst["id"])
    assert done["stop_reason"] == "user"
    worker.run_once()
    got = acme.instances.get(inst["id"])
    assert (got["state"], got["state_reason"]) == ("terminated", "user")
    states = [e["to_state"] for e in acme.instances.events(inst["id"])["data"] if e["to_state"]]
    assert states == ["pending", "provisioning", "running", "stopping", "terminated"]


def test_node_lifecycle_follows_the_instance(fleet: Client, acme: Client, worker: Worker) -> None:
    inst = acme.instances.create("8xH100")
    worker.run_once()
    node_id = acme.instances.get(inst["id"])["node_id"]
    assert fleet.nodes.get(node_id)["state"] == "in_use"
    acme.instances.terminate(inst["id"])
    worker.run_once()
    assert fleet.nodes.get(node_id)["state"] == "available"
    moves = [e["to_state"] for e in fleet.nodes.events(node_id)["data"]]
    assert moves[-6:] == ["allocated", "provisioning", "in_use", "releasing", "wiping", "available"]


def test_slices_share_a_node_with_distinct_gpus(acme: Client, worker: Worker) -> None:
    a = acme.instances.create("4xH100")
    b = acme.instances.create("2xH100")
    worker.run_once()
    a, b = acme.instances.get(a["id"]), acme.instances.get(b["id"])
    assert a["state"] == b["state"] == "running"
    if a["node_id"] == b["node_id"]:
        assert not set(a["gpu_indices"]) & set(b["gpu_indices"])


def test_quota_exceeded_names_usage_and_limit(fleet: Client) -> None:
    _, small = tenant_client(fleet, "small", quota=8)
    small.instances.create("4xH100")
    exc = _error(small.instances.create, "8xH100")
    assert (exc.status, exc.code) == (403, "quota_exceeded")
    assert exc.details["limit"] == 8
    assert exc.details["usage"] == 4
    assert exc.details["requested"] == 8
    _, none = tenant_client(fleet, "nobody", quota=None)
    exc = _error(none.instances.create, "1xH100")
    assert exc.code == "quota_exceeded"
    assert exc.details["limit"] == 0
    assert len(small.instances.list()["data"]) == 1  # the refused create wrote nothing


def test_terminated_instances_free_quota(fleet: Client, worker: Worker) -> None:
    _, small = tenant_client(fleet, "small", quota=8)
    first = small.instances.create("8xH100")
    worker.run_once()
    small.instances.terminate(first["id"])
    worker.run_once()
    assert small.instances.create("8xH100")["state"] == "pending"


def test_bad_input_is_a_precise_4xx_and_changes_nothing(fleet: Client, acme: Client) -> None:
    exc = _error(acme.instances.create, "9xH100")
    assert (exc.status, exc.code, exc.param) == (422, "unknown_instance_type", "instance_type")
    exc = _error(acme.instances.create, "1xH100", cls="reserved")
    assert (exc.status, exc.param) == (422, "class")
    exc = _error(acme.instances.create, "1xH100", cls="cheap")
    assert (exc.status, exc.param) == (422, "class")
    other, _ = tenant_client(fleet, "other")
    project = fleet.projects.create(other["id"], "theirs")
    exc = _error(acme.instances.create, "1xH100", project_id=project["id"])
    assert (exc.status, exc.code, exc.param) == (404, "project_not_found", "project_id")
    exc = _error(acme.instances.create, "1xH100", reservation_ids=["nope"])
    assert (exc.status, exc.param) == (422, "reservation_ids")
    exc = _error(acme.post, "instances", {"instance_type": "1xH100", "gpus": -1})
    assert exc.status == 422
    assert acme.instances.list()["data"] == []


def test_no_capacity_fails_with_reason(acme: Client, worker: Worker, fleet: Client) -> None:
    fleet.quotas.set(acme.get("me")["org_id"], "H100-SXM-80GB", 100)
    made = [acme.instances.create("8xH100") for _ in range(9)]
    worker.run_once()
    states = [acme.instances.get(m["id"]) for m in made]
    assert [s["state"] for s in states].count("running") == 8
    last = states[-1]
    assert (last["state"], last["state_reason"]) == ("failed", "no_capacity")
    assert "8" in last["state_message"]


def test_tenants_see_only_their_instances(fleet: Client, acme: Client) -> None:
    inst = acme.instances.create("1xH100")
    _, other = tenant_client(fleet, "other")
    exc = _error(other.instances.get, inst["id"])
    assert (exc.status, exc.code) == (404, "instance_not_found")
    exc = _error(other.instances.terminate, inst["id"])
    assert exc.status == 404
    assert other.instances.list()["data"] == []
    assert [i["id"] for i in fleet.instances.list()["data"]] == [inst["id"]]


def test_spot_is_preempted_with_notice(
    fleet: Client, acme: Client, worker: Worker, clock: VirtualClock
) -> None:
    fleet.quotas.set(acme.get("me")["org_id"], "H100-SXM-80GB", 200)
    spots = [acme.instances.create("8xH100", cls="spot") for _ in range(8)]
    worker.run_once()
    assert all(acme.instances.get(s["id"])["state"] == "running" for s in spots)
    od = acme.instances.create("8xH100")
    worker.run_once()
    od_now = acme.instances.get(od["id"])
    assert od_now["state"] == "provisioning"
    victims = [acme.instances.get(s["id"]) for s in spots]
    noticed = [v for v in victims if v["stop_reason"] == "preempted"]
    assert len(noticed) == 1
    assert noticed[0]["state"] == "running"  # still running during the 30 s notice
    clock.advance(30)
    worker.run_once()
    victim = acme.instances.get(noticed[0]["id"])
    assert (victim["state"], victim["state_reason"]) == ("preempted", "preempted")
    od_now = acme.instances.get(od["id"])
    assert od_now["state"] == "running"
    assert od_now["node_id"] == victim["node_id"]


def test_create_is_idempotent_under_a_key(acme: Client) -> None:
    first = acme.instances.create("1xH100", idempotency_key="k-1")
    again = acme.instances.create("1xH100", idempotency_key="k-1")
    assert again["id"] == first["id"]
    assert len(acme.instances.list()["data"]) == 1
    exc = _error(acme.instances.create, "2xH100", idempotency_key="k-1")
    assert exc.status == 409
