"""Admission of reservations through the API: ``bid_price`` declines a block that late
on-demand demand is expected to pay more for (409 ``reservation_declined`` with the figures,
and the offering listed under ``declined``); ``fcfs`` sells the same block."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from neocloud.client import ApiError, Client
from neocloud.compute.config import ComputeConfig
from neocloud.compute.worker import Worker
from neocloud.kernel.clock import VirtualClock, rfc3339

FCFS = ComputeConfig(burn_in=False)
BID = replace(FCFS, admission_policy="bid_price", admission_min_requests=6)


def _on_demand_history(acme: Client, worker: Worker, clock: VirtualClock) -> None:
    """Three days of 4 whole-node on-demand instances a day, each running a day: a steady
    demand of 4 nodes, all of it asked for at the last moment, at the on-demand price."""
    for _ in range(3):
        ids = [acme.instances.create("8xH100")["id"] for _ in range(4)]
        worker.run_once()
        assert all(acme.instances.get(i)["state"] == "running" for i in ids)
        clock.advance(86_400)
        for i in ids:
            acme.instances.terminate(i)
        worker.run_once()


def test_bid_price_declines_what_late_demand_pays_more_for_and_fcfs_sells_it(
    app, acme: Client, worker: Worker, clock: VirtualClock
) -> None:  # type: ignore[no-untyped-def]
    app.state.compute_config = FCFS
    _on_demand_history(acme, worker, clock)
    start = clock.now() + timedelta(days=2)
    # 6 of the 8 nodes reserved for the day: 2 left, and about 4 nodes of demand expected
    big = acme.reservations.offerings("H100", 6, 24, start_after=rfc3339(start))[0]
    assert big["start"] == rfc3339(start)
    acme.reservations.buy(big["id"])
    quoted = acme.reservations.offerings("H100", 2, 24, start_after=rfc3339(start))[0]
    assert quoted["start"] == rfc3339(start)

    app.state.compute_config = BID
    with pytest.raises(ApiError) as info:
        acme.reservations.buy(quoted["id"])
    exc = info.value
    assert (exc.status, exc.code) == (409, "reservation_declined")
    assert exc.message.startswith(
        f"declined: the 1-day window starting {start.isoformat()} is worth more to demand"
        " expected later (bid price "
    )
    bid = float(exc.details["bid_price"]["amount"])
    paid = float(exc.details["price"]["amount"])
    assert paid == 2.5415  # the reserved price per GPU-hour
    assert paid < bid <= 2.99  # no more than the on-demand price
    # steered: a later window it sells, hanging over the end of the 6-node block
    later = exc.details["suggestion"]
    assert start.isoformat() < later["start"] < big["end"].replace("Z", "+00:00") < later["end"]
    # offerings: the block at that start is not shown, and says why
    body = acme.post(
        "reservations/offerings",
        {"gpu_model": "H100", "node_count": 2, "duration_hours": 24,
         "start_after": rfc3339(start)},
    )  # fmt: skip
    assert body["declined"][0]["start"] == rfc3339(start)
    assert body["declined"][0]["reason"].startswith("declined: the 1-day window starting")
    assert body["declined"][0]["price_per_gpu_hour"] == "2.5415"

    assert body["data"][0]["start"] > rfc3339(start)  # the steered window is offered instead

    app.state.compute_config = FCFS
    rsv = acme.reservations.buy(quoted["id"])
    assert (rsv["state"], rsv["node_count"]) == ("scheduled", 2)
