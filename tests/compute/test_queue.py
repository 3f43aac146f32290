"""The waiting queue: queued requests wait pending, run when capacity frees, in class order and
FIFO within a class, and later requests backfill only where they do not delay the head."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from neocloud.client import ApiError, Client
from neocloud.compute.worker import Worker
from neocloud.kernel.clock import VirtualClock

Obj = dict[str, Any]


def _settle(worker: Worker, clock: VirtualClock, cycles: int = 4) -> None:
    for _ in range(cycles):
        worker.run_once()
        clock.advance(1)


def _state(c: Client, inst: Obj) -> str:
    return str(c.instances.get(inst["id"])["state"])


def _fill(acme: Client, worker: Worker, types: list[str]) -> list[Obj]:
    made = [acme.instances.create(t) for t in types]
    worker.run_once()
    assert all(acme.instances.get(m["id"])["state"] == "running" for m in made)
    return [acme.instances.get(m["id"]) for m in made]


@pytest.fixture
def big(fleet: Client, acme: Client) -> Client:
    fleet.quotas.set(acme.get("me")["org_id"], "H100-SXM-80GB", 500)
    return acme


def test_a_queued_instance_waits_and_runs_when_capacity_frees(
    big: Client, worker: Worker, clock: VirtualClock
) -> None:
    full = _fill(big, worker, ["8xH100"] * 8)
    queued = big.instances.create("8xH100", queue=True)
    assert queued["queue_until"] is not None
    _settle(worker, clock)
    got = big.instances.get(queued["id"])
    assert (got["state"], got["state_reason"]) == ("pending", None)
    assert got["state_message"].startswith("queued until")
    kinds = [e["kind"] for e in big.instances.events(queued["id"])["data"]]
    assert kinds.count("queued") == 1  # said once, not every cycle
    big.instances.terminate(full[3]["id"])
    _settle(worker, clock)
    got = big.instances.get(queued["id"])
    assert got["state"] == "running"
    assert got["node_id"] == full[3]["node_id"]


def test_without_queue_no_capacity_fails_at_once(big: Client, worker: Worker) -> None:
    _fill(big, worker, ["8xH100"] * 8)
    now = big.instances.create("8xH100")
    worker.run_once()
    got = big.instances.get(now["id"])
    assert (got["state"], got["state_reason"], got["queue_until"]) == (
        "failed",
        "no_capacity",
        None,
    )


def test_a_queued_request_fails_when_its_wait_runs_out(
    big: Client, worker: Worker, clock: VirtualClock
) -> None:
    _fill(big, worker, ["8xH100"] * 8)
    queued = big.instances.create("8xH100", max_wait_s=60)
    worker.run_once()
    assert _state(big, queued) == "pending"
    clock.advance(59)
    worker.run_once()
    assert _state(big, queued) == "pending"
    clock.advance(1)
    worker.run_once()
    got = big.instances.get(queued["id"])
    assert (got["state"], got["state_reason"]) == ("failed", "no_capacity")
    assert got["state_message"].startswith("waited until")


def test_fifo_within_a_class_and_classes_in_order(
    big: Client, worker: Worker, clock: VirtualClock
) -> None:
    full = _fill(big, worker, ["8xH100"] * 8)
    spot = big.instances.create("8xH100", cls="spot", queue=True)
    clock.advance(1)
    first = big.instances.create("8xH100", queue=True)
    clock.advance(1)
    second = big.instances.create("8xH100", queue=True)
    _settle(worker, clock)
    assert [_state(big, x) for x in (spot, first, second)] == ["pending"] * 3
    big.instances.terminate(full[0]["id"])
    _settle(worker, clock)
    # on-demand before the older spot request; the older on-demand one before the newer
    assert [_state(big, x) for x in (spot, first, second)] == ["pending", "running", "pending"]
    big.instances.terminate(full[1]["id"])
    _settle(worker, clock)
    assert [_state(big, x) for x in (spot, first, second)] == ["pending", "running", "running"]
    big.instances.terminate(full[2]["id"])
    _settle(worker, clock)
    assert _state(big, spot) == "running"


def _free_by_node(c: Client) -> dict[str, int]:
    used: Counter[str] = Counter()
    for i in c.instances.list(limit=100)["data"]:
        if i["state"] in ("provisioning", "running"):
            used[i["node_id"]] += i["gpu_count"]
    return {n: 8 - g for n, g in used.items() if g < 8}


def test_backfill_never_delays_the_head(big: Client, worker: Worker, clock: VirtualClock) -> None:
    # 6 nodes full; node A: 4x + 2x (2 free); node B: 4x (4 free)
    _fill(big, worker, ["8xH100"] * 6)
    a4 = _fill(big, worker, ["4xH100"])[0]
    _fill(big, worker, ["2xH100"])
    b4 = _fill(big, worker, ["4xH100"])[0]
    free = _free_by_node(big)
    assert sorted(free.values()) == [2, 4]
    node_b = b4["node_id"]
    node_a = a4["node_id"]
    assert free == {node_a: 2, node_b: 4}

    head = big.instances.create("8xH100", queue=True)  # waits; holds B's 4 free GPUs
    clock.advance(1)
    small = big.instances.create("2xH100", queue=True)  # fits A: backfills
    clock.advance(1)
    blocked = big.instances.create("4xH100", queue=True)  # only fits B: would delay the head
    clock.advance(1)
    at_once = big.instances.create("4xH100")  # not queued: fails, told why
    _settle(worker, clock)
    assert _state(big, head) == "pending"
    got = big.instances.get(small["id"])
    assert (got["state"], got["node_id"]) == ("running", node_a)
    assert _state(big, blocked) == "pending"
    got = big.instances.get(at_once["id"])
    assert (got["state"], got["state_reason"]) == ("failed", "no_capacity")
    assert "queued earlier" in got["state_message"]

    big.instances.terminate(b4["id"])  # B frees up: the head, not the 4x behind it, gets it
    _settle(worker, clock)
    got = big.instances.get(head["id"])
    assert (got["state"], got["node_id"]) == ("running", node_b)
    assert _state(big, blocked) == "pending"


def test_a_queued_cluster_waits_for_whole_nodes(
    big: Client, worker: Worker, clock: VirtualClock
) -> None:
    full = _fill(big, worker, ["8xH100"] * 7)
    cluster = big.clusters.create("H100", 2, queue=True, max_wait_s=3600)
    one = big.instances.create("8xH100", queue=True)  # later, same size as the free node
    _settle(worker, clock)
    got = big.clusters.get(cluster["id"])
    assert got["state"] == "pending"
    assert got["state_message"].startswith("queued until")
    assert _state(big, one) == "pending"  # the free node is held for the cluster
    big.instances.terminate(full[0]["id"])
    _settle(worker, clock)
    assert big.clusters.get(cluster["id"])["state"] == "running"
    assert _state(big, one) == "pending"


def test_what_can_never_fit_fails_at_once_even_queued(
    big: Client, worker: Worker, fleet: Client
) -> None:
    cluster = big.clusters.create("H100", 9, queue=True)  # the fleet has 8 H100 nodes
    worker.run_once()
    got = big.clusters.get(cluster["id"])
    assert (got["state"], got["state_reason"]) == ("failed", "no_capacity")
    assert "never fit" in got["state_message"]
    fleet.quotas.set(big.get("me")["org_id"], "H200-SXM-141GB", 8)
    h200 = big.instances.create("8xH200", queue=True)
    worker.run_once()
    got = big.instances.get(h200["id"])
    assert (got["state"], got["state_reason"]) == ("failed", "no_capacity")
    assert "no H200" in got["state_message"]


def _error(call, *args, **kwargs) -> ApiError:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as info:
        call(*args, **kwargs)
    return info.value


@pytest.mark.parametrize("wait", [0, -5, 7 * 86400 + 1])
def test_bad_waits_are_refused_and_change_nothing(big: Client, wait: int) -> None:
    exc = _error(big.instances.create, "1xH100", max_wait_s=wait)
    assert (exc.status, exc.code, exc.param) == (422, "invalid_queue", "max_wait_s")
    exc = _error(big.clusters.create, "H100", 1, max_wait_s=wait)
    assert (exc.status, exc.code, exc.param) == (422, "invalid_queue", "max_wait_s")
    assert big.instances.list()["data"] == []
    assert big.clusters.list()["data"] == []


def test_queue_false_with_a_wait_is_a_contradiction(big: Client) -> None:
    exc = _error(big.instances.create, "1xH100", queue=False, max_wait_s=60)
    assert (exc.status, exc.code, exc.param) == (422, "invalid_queue", "max_wait_s")
    assert big.instances.list()["data"] == []


def test_a_queued_reserved_instance_waits_for_its_reservation(
    big: Client, worker: Worker, clock: VirtualClock
) -> None:
    from datetime import timedelta

    from neocloud.kernel.clock import rfc3339

    start = clock.now() + timedelta(hours=1)
    offer = big.reservations.offerings("H100", 1, 24, start_after=rfc3339(start))[0]
    rsv = big.reservations.buy(offer["id"])
    early = big.instances.create("8xH100", reservation_ids=[rsv["id"]], queue=True)
    worker.run_once()
    got = big.instances.get(early["id"])
    assert (got["state"], got["class"]) == ("pending", "reserved")  # waits for the start
    assert "starts at" in got["state_message"]
    clock.set(start)
    worker.run_once()
    first = big.instances.get(early["id"])
    assert first["state"] == "running"
    second = big.instances.create("8xH100", reservation_ids=[rsv["id"]], queue=True)
    _settle(worker, clock)
    assert _state(big, second) == "pending"  # the reservation's one node is taken
    big.instances.terminate(early["id"])
    _settle(worker, clock)
    got = big.instances.get(second["id"])
    assert (got["state"], got["node_id"]) == ("running", first["node_id"])
    ended = big.instances.get(early["id"])  # a planned stop (the reservation's end) ...
    assert (ended["state"], ended["state_reason"]) == ("terminated", "user")  # ... brought forward


def test_a_queued_instance_gets_the_nodes_a_reservation_leaves(
    big: Client, worker: Worker, clock: VirtualClock
) -> None:
    from datetime import timedelta

    offer = big.reservations.offerings("H100", 8, 24)[0]  # the whole fleet, from now
    big.reservations.buy(offer["id"])
    _settle(worker, clock)
    waiting = big.instances.create("8xH100", reservation_policy="forbid", max_wait_s=2 * 86400)
    _settle(worker, clock)
    assert _state(big, waiting) == "pending"
    clock.advance(timedelta(hours=24).total_seconds())
    _settle(worker, clock)
    assert _state(big, waiting) == "running"
