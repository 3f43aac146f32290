"""Clusters: gangs of whole nodes, topology, all-or-nothing, failure and replacement,
preemption of spot gangs."""

from __future__ import annotations

import pytest

from neocloud.client import ApiError, Client
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database
from neocloud.fleet import service as fleet_service
from neocloud.fleet.domain import CheckStatus
from neocloud.fleet.service import CheckResult
from neocloud.kernel.clock import VirtualClock


def _error(call, *args, **kwargs) -> ApiError:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as info:
        call(*args, **kwargs)
    return info.value


def test_cluster_runs_in_one_block_and_shows_topology(acme: Client, worker: Worker) -> None:
    c = acme.clusters.create("H100", 4, name="llm", topology={"required": "fabric"})
    assert (c["object"], c["state"], c["node_count"]) == ("cluster", "pending", 4)
    assert c["price_per_hour"] == {"amount": "95.68", "currency": "USD"}
    worker.run_once()
    c = acme.clusters.get(c["id"])
    assert c["state"] == "running"
    paths = [n["topology_path"] for n in c["nodes"]]
    assert len({n["node_id"] for n in c["nodes"]}) == 4
    assert len({p["block"] for p in paths}) == 1  # preferred: fewest blocks
    assert {p["fabric"] for p in paths} == {"us-east-1a-ib01"}
    assert all(n["state"] == "running" for n in c["nodes"])
    members = acme.instances.list(cluster_id=c["id"])["data"]
    assert {m["gpu_count"] for m in members} == {8}


def test_cluster_is_all_or_nothing(acme: Client, worker: Worker, fleet: Client) -> None:
    fleet.quotas.set(acme.get("me")["org_id"], "H100-SXM-80GB", 100)
    c = acme.clusters.create("H100", 9)
    worker.run_once()
    c = acme.clusters.get(c["id"])
    assert (c["state"], c["state_reason"]) == ("failed", "no_capacity")
    assert "9" in c["state_message"]
    assert {n["state"] for n in c["nodes"]} == {"failed"}
    assert fleet.nodes.list(state="available")["data"].__len__() == 8


def test_terminate_frees_every_node(acme: Client, worker: Worker, fleet: Client) -> None:
    c = acme.clusters.create("H100", 8)
    worker.run_once()
    c = acme.clusters.get(c["id"])
    assert c["state"] == "running"
    exc = _error(acme.instances.terminate, c["nodes"][0]["instance_id"])
    assert (exc.status, exc.code) == (422, "cluster_member")
    assert acme.clusters.terminate(c["id"])["state"] == "stopping"
    worker.run_once()
    c = acme.clusters.get(c["id"])
    assert (c["state"], c["state_reason"]) == ("terminated", "user")
    assert len(fleet.nodes.list(state="available")["data"]) == 8


def test_failed_node_is_replaced_nearby(
    acme: Client, worker: Worker, db: Database, clock: VirtualClock
) -> None:
    c = acme.clusters.create("H100", 3)
    worker.run_once()
    c = acme.clusters.get(c["id"])
    assert c["state"] == "running"
    block = c["nodes"][0]["topology_path"]["block"]
    lost = c["nodes"][0]["node_id"]
    fleet_service.report_health(
        db=db, clock=clock, node_id=lost, checks=[CheckResult("gpu", CheckStatus.FAIL, "Xid 79")]
    )
    worker.run_once()
    c = acme.clusters.get(c["id"])
    assert (c["state"], c["state_reason"]) == ("degraded", "node_failed")
    worker.run_once()
    c = acme.clusters.get(c["id"])
    assert c["state"] == "running"
    live = [n for n in c["nodes"] if n["state"] == "running"]
    assert len(live) == 3
    assert lost not in {n["node_id"] for n in live}
    assert {n["topology_path"]["block"] for n in live} == {block}  # the block's free node
    kinds = [(e["kind"], e["to_state"]) for e in acme.clusters.events(c["id"])["data"]]
    assert ("state", "degraded") in kinds
    assert kinds.index(("state", "degraded")) < kinds.index(("replacement", None))
    assert kinds[-1] == ("state", "running")


def test_spot_cluster_is_preempted_as_a_whole(
    acme: Client, worker: Worker, clock: VirtualClock, fleet: Client
) -> None:
    fleet.quotas.set(acme.get("me")["org_id"], "H100-SXM-80GB", 200)
    spot = acme.clusters.create("H100", 8, cls="spot")
    worker.run_once()
    assert acme.clusters.get(spot["id"])["state"] == "running"
    od = acme.instances.create("8xH100")
    worker.run_once()
    assert acme.clusters.get(spot["id"])["state"] == "running"  # under notice
    clock.advance(30)
    worker.run_once()
    spot = acme.clusters.get(spot["id"])
    assert (spot["state"], spot["state_reason"]) == ("preempted", "preempted")
    assert acme.instances.get(od["id"])["state"] == "running"


def test_bad_cluster_input_is_precise(acme: Client) -> None:
    for count in (0, -1):
        exc = _error(acme.clusters.create, "H100", count)
        assert (exc.status, exc.param) == (422, "node_count")
    exc = _error(acme.clusters.create, "V100", 2)
    assert (exc.status, exc.code) == (422, "unknown_gpu_model")
    exc = _error(acme.clusters.create, "H100", 4, topology={"required": "row"})
    assert exc.param == "topology.required"
    exc = _error(acme.clusters.create, "H100", 4, topology={"segment": 3})
    assert exc.param == "topology.segment"
    exc = _error(acme.clusters.create, "H100", 2, fabric="nope")
    assert exc.param == "fabric"
    exc = _error(acme.clusters.create, "H100", 9)
    assert (exc.status, exc.code) == (403, "quota_exceeded")
    assert acme.clusters.list()["data"] == []
    assert acme.instances.list()["data"] == []
