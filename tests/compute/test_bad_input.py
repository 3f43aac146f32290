"""Bad input the compute issue names (unknown type, negative counts, start after end, durations
out of range, foreign project) answers a precise 4xx and changes nothing — the cases the other
test files do not cover."""

from __future__ import annotations

import pytest

from neocloud.client import ApiError, Client
from neocloud.kernel.clock import VirtualClock

from .helpers import tenant_client


def _error(call, *args, **kwargs) -> ApiError:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as info:
        call(*args, **kwargs)
    return info.value


def test_a_cluster_in_a_foreign_project_is_404_and_changes_nothing(
    fleet: Client, acme: Client
) -> None:
    other, _ = tenant_client(fleet, "other")
    theirs = fleet.projects.create(other["id"], "theirs")
    exc = _error(acme.clusters.create, "H100", 2, project_id=theirs["id"])
    assert (exc.status, exc.code, exc.param) == (404, "project_not_found", "project_id")
    assert acme.clusters.list()["data"] == []
    assert acme.instances.list()["data"] == []


def test_negative_counts_and_durations_are_422(acme: Client, clock: VirtualClock) -> None:
    exc = _error(acme.reservations.offerings, "H100", -2, 24)
    assert (exc.status, exc.param) == (422, "node_count")
    exc = _error(acme.reservations.offerings, "H100", 2, -24)
    assert (exc.status, exc.param) == (422, "duration_hours")
    offer = acme.reservations.offerings("H100", 2, 24)[0]
    rsv = acme.reservations.buy(offer["id"])
    for hours in (0, -5):
        exc = _error(acme.reservations.extend, rsv["id"], hours)
        assert (exc.status, exc.param) == (422, "hours")
    assert acme.reservations.get(rsv["id"])["end"] == rsv["end"]
    exc = _error(acme.post, "clusters", {"gpu_model": "H100", "node_count": 2, "gpus": -1})
    assert exc.status == 422
    exc = _error(acme.clusters.create, "H100", 2, max_wait_s=-60)
    assert (exc.status, exc.param) == (422, "max_wait_s")
    assert acme.clusters.list()["data"] == []
    assert [r["id"] for r in acme.reservations.list()["data"]] == [rsv["id"]]


def test_unknown_types_and_models_are_422(acme: Client) -> None:
    for bad in ("8xV100", "3xH100", "", "x" * 40):
        exc = _error(acme.instances.create, bad)
        assert exc.status == 422
        assert exc.param == "instance_type"
    exc = _error(acme.reservations.offerings, "V100", 2, 24)
    assert (exc.status, exc.code) == (422, "unknown_gpu_model")
    assert acme.instances.list()["data"] == []
