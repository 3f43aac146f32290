"""Reservations (capacity blocks): offerings, purchase, start, launch inside, end, cancel,
extend; and capacity advice."""

from __future__ import annotations

from datetime import timedelta

import pytest

from neocloud.client import ApiError, Client
from neocloud.compute.worker import Worker
from neocloud.kernel.clock import VirtualClock, rfc3339

from .helpers import tenant_client


def _error(call, *args, **kwargs) -> ApiError:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as info:
        call(*args, **kwargs)
    return info.value


def test_offerings_are_priced_and_bought_once(acme: Client, clock: VirtualClock) -> None:
    week = clock.now() + timedelta(days=7)
    offers = acme.reservations.offerings("H100", 4, 48, start_after=rfc3339(week))
    assert 1 <= len(offers) <= 6
    o = offers[0]
    assert o["object"] == "offering"
    assert o["id"].startswith("off_")
    assert o["start"] == rfc3339(week)
    assert o["fabric"] == "us-east-1a-ib01"
    # 32 GPUs x 48 h x 2.5415 (list price less 15 %, at the price book's 4 places)
    assert o["price"] == {"amount": "3903.74", "currency": "USD"}
    rsv = acme.reservations.buy(o["id"])
    assert (rsv["object"], rsv["state"], rsv["node_count"]) == ("reservation", "scheduled", 4)
    assert acme.reservations.buy(o["id"])["id"] == rsv["id"]  # idempotent
    assert [r["id"] for r in acme.reservations.list()["data"]] == [rsv["id"]]


def test_stale_or_taken_offering_is_409_with_a_suggestion(
    fleet: Client, acme: Client, clock: VirtualClock
) -> None:
    offers = acme.reservations.offerings("H100", 8, 24)
    clock.advance(301)
    exc = _error(acme.reservations.buy, offers[0]["id"])
    assert (exc.status, exc.code) == (409, "offering_expired")
    assert exc.details["suggestion"]["id"].startswith("off_")
    _, other = tenant_client(fleet, "other")
    mine = acme.reservations.offerings("H100", 8, 24)[0]
    theirs = other.reservations.offerings("H100", 8, 24)[0]
    acme.reservations.buy(mine["id"])
    exc = _error(other.reservations.buy, theirs["id"])
    assert (exc.status, exc.code) == (409, "offering_taken")
    later = exc.details["suggestion"]
    assert later["start"] >= mine["end"].replace("Z", "+00:00")


def test_reservation_lifecycle_with_spot_before_and_instances_inside(
    acme: Client, worker: Worker, clock: VirtualClock, fleet: Client
) -> None:
    fleet.quotas.set(acme.get("me")["org_id"], "H100-SXM-80GB", 200)
    start = clock.now() + timedelta(hours=1)
    offer = acme.reservations.offerings("H100", 8, 24, start_after=rfc3339(start))[0]
    rsv = acme.reservations.buy(offer["id"])
    spot = acme.instances.create("8xH100", cls="spot")
    od = acme.instances.create("8xH100", reservation_policy="forbid")
    worker.run_once()
    spot = acme.instances.get(spot["id"])
    assert spot["state"] == "running"  # reserved nodes serve spot until the start
    assert spot["stop_at"] == rfc3339(start)
    assert acme.instances.get(od["id"])["state_reason"] == "no_capacity"
    early = acme.instances.create("1xH100", reservation_ids=[rsv["id"]])
    worker.run_once()
    early = acme.instances.get(early["id"])
    assert (early["state"], early["state_reason"]) == ("failed", "no_capacity")
    assert "starts at" in early["state_message"]
    clock.set(start)
    worker.run_once()
    assert acme.reservations.get(rsv["id"])["state"] == "active"
    assert acme.instances.get(spot["id"])["state"] == "preempted"
    inside = acme.instances.create("8xH100", reservation_ids=[rsv["id"]])
    auto = acme.instances.create("4xH100")  # policy auto lands in the reservation
    worker.run_once()
    inside, auto = acme.instances.get(inside["id"]), acme.instances.get(auto["id"])
    assert (inside["state"], inside["class"]) == ("running", "reserved")
    assert (auto["state"], auto["class"], auto["reservation_id"]) == (
        "running",
        "reserved",
        rsv["id"],
    )
    clock.set(start + timedelta(hours=24))
    worker.run_once()
    assert acme.reservations.get(rsv["id"])["state"] == "expired"
    for inst in (inside, auto):
        got = acme.instances.get(inst["id"])
        assert (got["state"], got["state_reason"]) == ("terminated", "reservation_ended")
    assert len(fleet.nodes.list(state="available")["data"]) == 8


def test_cancel_before_start_frees_the_nodes(
    acme: Client, worker: Worker, clock: VirtualClock
) -> None:
    start = clock.now() + timedelta(hours=2)
    offer = acme.reservations.offerings("H100", 8, 24, start_after=rfc3339(start))[0]
    rsv = acme.reservations.buy(offer["id"])
    assert acme.reservations.cancel(rsv["id"])["state"] == "cancelled"
    od = acme.instances.create("8xH100")
    worker.run_once()
    assert acme.instances.get(od["id"])["state"] == "running"


def test_extend_when_the_nodes_stay_free(acme: Client, clock: VirtualClock) -> None:
    offer = acme.reservations.offerings("H100", 2, 24)[0]
    rsv = acme.reservations.buy(offer["id"])
    longer = acme.reservations.extend(rsv["id"], 24)
    assert longer["end"] == rfc3339(clock.now() + timedelta(hours=48))
    assert rsv["price"]["amount"] == "975.94"  # 16 GPUs x 24 h x 2.5415 = 975.936
    assert longer["price"]["amount"] == "1951.87"  # 48 h: 1951.872, rounded once
    exc = _error(acme.reservations.extend, rsv["id"], 24 * 400)
    assert (exc.status, exc.code) == (422, "duration_out_of_range")


def test_bad_reservation_input_is_precise(acme: Client, clock: VirtualClock) -> None:
    for hours in (1, 24 * 366):
        exc = _error(acme.reservations.offerings, "H100", 2, hours)
        assert (exc.status, exc.code, exc.param) == (422, "duration_out_of_range", "duration_hours")
    exc = _error(acme.reservations.offerings, "H100", 0, 24)
    assert exc.param == "node_count"
    now = clock.now()
    exc = _error(
        acme.reservations.offerings,
        "H100",
        2,
        24,
        start_after=rfc3339(now + timedelta(days=2)),
        start_before=rfc3339(now + timedelta(days=1)),
    )
    assert (exc.status, exc.param) == (422, "start_before")
    exc = _error(acme.reservations.buy, "off_nope")
    assert exc.status == 404
    exc = _error(
        acme.instances.create, "1xH100", reservation_ids=["rsv_01M8HP08097423MCMWXTSB7PTR"]
    )
    assert (exc.status, exc.code) == (404, "reservation_not_found")
    assert acme.reservations.list()["data"] == []


def test_capacity_advice_for_tenants_and_numbers_for_operators(
    acme: Client, fleet: Client, worker: Worker
) -> None:
    (line,) = acme.capacity.get(gpu_model="H100")
    assert (line["region"], line["on_demand"], line["free_gpus"]) == ("us-east-1", "high", None)
    for _ in range(7):
        acme.instances.create("8xH100")
    worker.run_once()
    (line,) = acme.capacity.get()
    assert line["on_demand"] == "medium"
    (exact,) = fleet.capacity.get()
    assert (exact["free_gpus"], exact["total_gpus"], exact["free_nodes"]) == (8, 64, 1)


def test_operator_sells_a_multi_year_contract_to_a_tenant(fleet: Client, acme: Client) -> None:
    org_id = acme.get("me")["org_id"]
    three_years = 3 * 365 * 24
    exc = _error(acme.reservations.offerings, "H100", 2, three_years)
    assert exc.code == "duration_out_of_range"
    exc = _error(
        acme.reservations.offerings, "H100", 2, 24, org_id="org_01M8HP08097423MCMWXTSB7PTR"
    )
    assert exc.status in (403, 404)
    offer = fleet.reservations.offerings("H100", 2, three_years, org_id=org_id)[0]
    rsv = fleet.reservations.buy(offer["id"])
    assert rsv["org_id"] == org_id
    assert [r["id"] for r in acme.reservations.list()["data"]] == [rsv["id"]]


def test_extending_an_active_reservation_keeps_its_instances_running(
    acme: Client, worker: Worker, clock: VirtualClock
) -> None:
    rsv = acme.reservations.buy(acme.reservations.offerings("H100", 1, 24)[0]["id"])
    worker.run_once()
    inst = acme.instances.create("8xH100", reservation_ids=[rsv["id"]])
    worker.run_once()
    assert acme.instances.get(inst["id"])["state"] == "running"
    longer = acme.reservations.extend(rsv["id"], 24)
    assert acme.instances.get(inst["id"])["stop_at"] == longer["end"]
    clock.advance(timedelta(hours=25))
    worker.run_once()
    assert acme.instances.get(inst["id"])["state"] == "running"
    clock.advance(timedelta(hours=23))
    worker.run_once()
    got = acme.instances.get(inst["id"])
    assert (got["state"], got["state_reason"]) == ("terminated", "reservation_ended")


def test_a_reservation_is_billed_its_quote_once_with_an_instance_inside(
    acme: Client, worker: Worker, clock: VirtualClock, fleet: Client
) -> None:
    """The block pays for the reservation's GPUs at the quoted price; an instance running
    inside uses those GPUs and is not billed a second time (it was: 384 GPU-hours, twice the
    quote, for one 8-GPU node reserved 24 h with an 8-GPU instance on it)."""
    org = acme.get("me")["org_id"]
    fleet.quotas.set(org, "H100-SXM-80GB", 200)
    start = clock.now() + timedelta(hours=1)
    offer = acme.reservations.offerings("H100", 1, 24, start_after=rfc3339(start))[0]
    rsv = acme.reservations.buy(offer["id"])
    clock.set(start)
    worker.run_once()
    inside = acme.instances.create("8xH100", reservation_ids=[rsv["id"]])
    worker.run_once()
    assert acme.instances.get(inside["id"])["state"] == "running"
    clock.set(start + timedelta(hours=24))
    worker.run_once()
    preview = fleet.invoices.preview(org, clock.now().strftime("%Y-%m"))
    (line,) = preview["lines"]
    assert (line["sku"], line["gpu_hours"]) == ("H100-SXM-80GB.reserved.1m", "192.000000")
    assert line["amount"] == rsv["price"] == preview["total"]


def test_a_reservation_keeps_the_price_it_was_bought_at(
    acme: Client, worker: Worker, clock: VirtualClock, fleet: Client
) -> None:
    """The operator publishes dearer prices after the purchase: the reservation, and its
    extension, are still billed exactly what they were quoted."""
    org = acme.get("me")["org_id"]
    start = clock.now() + timedelta(hours=1)
    offer = acme.reservations.offerings("H100", 1, 24, start_after=rfc3339(start))[0]
    rsv = acme.reservations.buy(offer["id"])
    m = "H100-SXM-80GB"
    dear = {f"{m}.on_demand": "9.00", f"{m}.spot": "5.00"}
    dear |= {f"{m}.reserved.1m": "8.00", f"{m}.reserved.1y": "7.00"}
    fleet.price_books.publish(rfc3339(clock.now()), gpu_prices=dear)
    clock.set(start)
    worker.run_once()
    longer = acme.reservations.extend(rsv["id"], 24)
    clock.set(start + timedelta(hours=48))
    worker.run_once()
    preview = fleet.invoices.preview(org, clock.now().strftime("%Y-%m"))
    (line,) = preview["lines"]
    assert (line["sku"], line["gpu_hours"]) == (f"{m}.reserved.1m", "384.000000")
    assert line["unit_price"]["amount"] == "2.5415"  # the quote's, not the book's 8.00
    assert line["amount"] == longer["price"] == preview["total"]
