"""Quotas that count: usage is compute's count of GPUs in use, and quotas name catalog models
(both backends, through the HTTP API)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from neocloud.client import ApiError, Client
from neocloud.compute.worker import Worker

from .helpers import tenant_client

H100 = "H100-SXM-80GB"
L40S = "L40S-48GB"

# 2 L40S nodes of 8 GPUs (the catalog's L40S goes up to 10 per node) and 2 H100 nodes.
L40S_FLEET = """\
version: 1
levels: [region, zone, fabric, block, rack]
templates:
  l40s-8x:
    gpu_model: l40s
    gpu_count: 8
    vcpus: 128
    ram_gib: 1024
    nvme_tib: 15
sites:
  - region: us-east-1
    zone: us-east-1a
    fabrics:
      - name: us-east-1a-eth01
        template: l40s-8x
        blocks: 1
        racks_per_block: 1
        nodes_per_rack: 2
"""


def _error(call, *args, **kwargs) -> ApiError:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as info:
        call(*args, **kwargs)
    return info.value


def _usage(admin: Client, org_id: str) -> dict[str, int]:
    return {q["gpu_model"]: q["usage"] for q in admin.quotas.list(org_id)["data"]}


def test_quotas_show_the_gpus_the_org_uses_per_model(fleet: Client, worker: Worker) -> None:
    org, acme = tenant_client(fleet, "acme")
    _, other = tenant_client(fleet, "globex")
    assert _usage(fleet, org["id"])[H100] == 0
    acme.instances.create("8xH100")
    acme.instances.create("2xH100", cls="spot")
    acme.clusters.create("H100", 2)
    other.instances.create("4xH100")  # another org's GPUs are not acme's
    assert _usage(fleet, org["id"])[H100] == 8 + 2 + 16  # pending counts: it holds quota
    worker.run_once()
    assert _usage(fleet, org["id"])[H100] == 26
    gone = acme.instances.list(cls="spot")["data"][0]
    acme.instances.terminate(gone["id"])
    worker.run_once()
    assert _usage(fleet, org["id"])[H100] == 24
    # the org reads its own, and setting a quota answers the usage too
    assert {q["gpu_model"]: q["usage"] for q in acme.quotas.list(org["id"])["data"]}[H100] == 24
    assert fleet.quotas.set(org["id"], H100, 32)["usage"] == 24


def test_a_quota_for_a_model_not_in_the_catalog_is_refused(fleet: Client) -> None:
    org, _ = tenant_client(fleet, "acme")
    err = _error(fleet.quotas.set, org["id"], "H1OO", 5)
    assert (err.status, err.param, err.code) == (422, "gpu_model", "unknown_gpu_model")
    assert H100 in err.message
    assert L40S in err.message
    assert H100 in err.details["known"]
    assert "H1OO" not in _usage(fleet, org["id"])
    err = _error(fleet.quotas.set_default, "H1OO", 5)
    assert (err.status, err.param) == (422, "gpu_model")


def test_an_alias_stores_the_canonical_name(fleet: Client) -> None:
    org, _ = tenant_client(fleet, "acme", quota=None)
    got = fleet.quotas.set(org["id"], "h100", 5)
    assert (got["gpu_model"], got["limit_gpus"]) == (H100, 5)
    quotas = {q["gpu_model"]: q for q in fleet.quotas.list(org["id"])["data"]}
    assert "h100" not in quotas
    assert quotas[H100]["limit_gpus"] == 5
    assert fleet.quotas.set_default("L40S", 16)["gpu_model"] == L40S
    fleet.quotas.reset(org["id"], "H100")  # an alias names the override too
    assert H100 not in {q["gpu_model"] for q in fleet.quotas.list(org["id"])["data"]}


def test_an_l40s_cluster_is_made_of_the_fleets_8_gpu_nodes(admin: Client, worker: Worker) -> None:
    assert admin.fleet.import_spec(L40S_FLEET)["nodes_created"] == 2
    org, acme = tenant_client(admin, "acme", quota=None)
    admin.quotas.set(org["id"], L40S, 16)
    cluster = acme.clusters.create("L40S", 2)
    (one,) = [t for t in acme.instance_types.list(gpu_model="L40S") if t["gpus"] == 1]
    per_gpu = Decimal(one["price_per_hour"]["on_demand"]["amount"])
    assert Decimal(cluster["price_per_hour"]["amount"]) == 16 * per_gpu  # 2 nodes x 8 GPUs
    members = acme.instances.list(cluster_id=cluster["id"])["data"]
    assert [m["instance_type"] for m in members] == ["8xL40S", "8xL40S"]
    worker.run_once()
    assert acme.clusters.get(cluster["id"])["state"] in ("provisioning", "running")
    assert _usage(admin, org["id"])[L40S] == 16
