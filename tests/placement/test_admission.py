"""Admission of reservations by bid price (``neocloud.placement.admission``): pure, no database."""

from __future__ import annotations

import pytest

from neocloud.kernel.errors import InvalidRequest
from neocloud.placement.admission import (
    HOUR,
    AdmissionPolicy,
    AdmissionRequest,
    Demand,
    DemandForecast,
    PoolFill,
    decide,
    get_admission_policy,
    steer_starts,
)

DAY = 24 * HOUR
OD, RSV = 1.00, 0.85  # per GPU-hour: on-demand (list), reserved (list less 15 %)
NOW = 10 * DAY


def on_demand_history(
    nodes_per_hour: int = 1, days: int = 3, length_h: float = 4
) -> DemandForecast:
    """On-demand requests (asked for at their start) of 1 node each, ``nodes_per_hour`` arriving
    every hour of the last ``days`` days, ``length_h`` long: a steady late demand of
    ``nodes_per_hour x length_h`` nodes in every hour (less in the next ``length_h`` hours, part
    of which is already running)."""
    f = DemandForecast()
    t = NOW - days * DAY
    while t < NOW:
        for _ in range(nodes_per_hour):
            f.observe(Demand(t, t, t + length_h * HOUR, 1, OD))
        t += HOUR
    return f


def ask(nodes: int, start: float, hours: float = 24, price: float = RSV) -> AdmissionRequest:
    return AdmissionRequest(nodes, 8, start, start + hours * HOUR, price)


def always(_s: float) -> bool:
    return True


def test_forecast_learns_the_rate_and_the_lead_time() -> None:
    f = on_demand_history(nodes_per_hour=2, length_h=4)
    far, soon = f.late(NOW, [NOW + 2 * DAY, NOW + HOUR])
    assert far.mean == pytest.approx(8.0, rel=0.05)  # 2 per hour x 4 h, all still to come
    assert far.price == OD
    assert far.var == pytest.approx(far.mean)  # 1-node requests: Poisson
    assert soon.mean < far.mean  # an hour from now, part of its demand has arrived already
    # booked three days ahead: none of it is still to come two days ahead
    early = DemandForecast()
    for i in range(72):
        t = NOW - 3 * DAY + i * HOUR
        early.observe(Demand(t - 3 * DAY, t, t + HOUR, 1, RSV))
    assert early.late(NOW, [NOW + 2 * DAY])[0].mean == 0.0


@pytest.mark.parametrize(
    ("name", "policy", "booked", "price", "fits", "code"),
    [
        # fcfs: whatever fits
        ("fcfs, full pool", AdmissionPolicy.fcfs, 60, RSV, True, "admitted"),
        ("fcfs, no room", AdmissionPolicy.fcfs, 0, RSV, False, "no_capacity"),
        # bid price: an empty pool is worth nothing more than the reservation
        ("bid, empty pool", AdmissionPolicy.bid_price, 0, RSV, True, "admitted"),
        # late on-demand demand (8 nodes) exceeds the 4 nodes left: declined at 0.85
        ("bid, tight pool", AdmissionPolicy.bid_price, 60, RSV, True, "reservation_declined"),
        # ... but not at the on-demand price (the bid price never exceeds what demand pays)
        ("bid, tight pool, list price", AdmissionPolicy.bid_price, 60, OD, True, "admitted"),
        ("bid, no room", AdmissionPolicy.bid_price, 0, RSV, False, "no_capacity"),
    ],
)
def test_decision_table(
    name: str, policy: AdmissionPolicy, booked: int, price: float, fits: bool, code: str
) -> None:
    start = NOW + 2 * DAY
    fill = PoolFill(64, ((NOW, NOW + 30 * DAY, booked),) if booked else ())
    v = decide(
        policy,
        ask(2, start, price=price),
        now=NOW,
        fill=fill,
        forecast=on_demand_history(nodes_per_hour=2),
        fits=lambda _s: fits,
    )
    assert v.code == code, name
    assert v.admitted is (code == "admitted")
    assert v.start == (start if v.admitted else None)


def test_a_decline_says_why_in_figures() -> None:
    fill = PoolFill(64, ((NOW, NOW + 30 * DAY, 60),))
    v = decide(
        AdmissionPolicy.bid_price,
        ask(2, NOW + 2 * DAY, hours=72),
        now=NOW,
        fill=fill,
        forecast=on_demand_history(nodes_per_hour=2),
        fits=always,
        when="starting 2026-12-12",
    )
    assert not v.admitted
    assert RSV < v.bid_price <= OD
    assert v.reason == (
        "declined: the 3-day window starting 2026-12-12 is worth more to demand expected later"
        f" (bid price {v.bid_price:.4f} per GPU-hour vs your 0.8500)"
    )


def test_bigger_blocks_pay_for_more_of_the_pool_but_per_node_on_average() -> None:
    f = on_demand_history(nodes_per_hour=2)
    fill = PoolFill(64, ((NOW, NOW + 30 * DAY, 52),))  # 12 free, late demand ~8
    small = decide(AdmissionPolicy.bid_price, ask(1, NOW + 2 * DAY), now=NOW, fill=fill,
                   forecast=f, fits=always)  # fmt: skip
    big = decide(AdmissionPolicy.bid_price, ask(8, NOW + 2 * DAY), now=NOW, fill=fill,
                 forecast=f, fits=always)  # fmt: skip
    assert small.admitted
    assert small.bid_price < big.bid_price


def test_too_little_history_falls_back_to_first_come_first_served() -> None:
    f = DemandForecast()
    for i in range(5):
        f.observe(Demand(NOW - i * HOUR, NOW - i * HOUR, NOW + DAY, 16, OD))
    fill = PoolFill(64, ((NOW, NOW + 30 * DAY, 62),))
    v = decide(AdmissionPolicy.bid_price, ask(2, NOW + DAY), now=NOW, fill=fill, forecast=f,
               fits=always)  # fmt: skip
    assert (v.admitted, v.bid_price) == (True, 0.0)
    v = decide(AdmissionPolicy.bid_price, ask(2, NOW + DAY), now=NOW, fill=fill, forecast=f,
               fits=always, min_requests=5)  # fmt: skip
    assert not v.admitted


def test_steering_takes_the_nearest_start_that_fits_and_passes() -> None:
    start = NOW + 2 * DAY
    # the pool is tight until start + 20 h; free after
    fill = PoolFill(64, ((NOW, start + 20 * HOUR, 60),))
    f = on_demand_history(nodes_per_hour=2)
    v = decide(AdmissionPolicy.bid_price, ask(2, start, hours=4), now=NOW, fill=fill,
               forecast=f, fits=always, steer_s=24 * HOUR)  # fmt: skip
    assert (v.admitted, v.code) == (True, "steered")
    assert v.start is not None
    assert start + 14 * HOUR < v.start <= start + 20 * HOUR  # later, mostly past the tight hours
    assert v.alternative == v.start
    # without leave to move, the same request is declined, naming the start it would take
    v2 = decide(AdmissionPolicy.bid_price, ask(2, start, hours=4), now=NOW, fill=fill,
                forecast=f, fits=always)  # fmt: skip
    assert (v2.admitted, v2.code, v2.alternative) == (False, "reservation_declined", None)
    # fcfs steers around a start that does not fit
    v3 = decide(AdmissionPolicy.fcfs, ask(2, start), now=NOW, fill=PoolFill(64), forecast=f,
                fits=lambda s: s != start, steer_s=2 * HOUR)  # fmt: skip
    assert (v3.code, v3.start) == ("steered", start + HOUR)


def test_steer_starts_are_nearest_first_and_never_in_the_past() -> None:
    assert list(steer_starts(10 * HOUR, 9 * HOUR, 2 * HOUR, HOUR)) == [
        11 * HOUR,
        9 * HOUR,
        12 * HOUR,
    ]


def test_unknown_policy_names_the_known_ones() -> None:
    assert get_admission_policy("bid_price") is AdmissionPolicy.bid_price
    with pytest.raises(InvalidRequest, match="fcfs, bid_price"):
        get_admission_policy("lottery")


def test_ramp_sums_clamped_overlaps_like_the_brute_force() -> None:
    import random

    from neocloud.placement.admission import Ramp

    rng = random.Random(5)
    items = []
    for _ in range(50):
        lo = rng.uniform(-10, 10)
        items.append((lo, lo + rng.uniform(0, 8), rng.uniform(0.1, 3)))
    r = Ramp(items)
    for x in [rng.uniform(-15, 25) for _ in range(200)] + [lo for lo, _, _ in items]:
        brute = sum(w * (min(max(x, lo), hi) - lo) for lo, hi, w in items)
        assert r(x) == pytest.approx(brute, abs=1e-9)
    fill = PoolFill(8, ((0.0, 2 * HOUR, 4), (HOUR, 3 * HOUR, 2)))
    assert fill.booked(0.0, HOUR) == 4
    assert fill.booked(HOUR, 2 * HOUR) == 6
    assert fill.booked(1.5 * HOUR, 2.5 * HOUR) == 4  # half an hour of 6, half of 2
