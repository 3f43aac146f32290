"""Benchmark 3b — value-aware admission of reservations against the ILP of benchmark 3.

The instances of ``optimality.py`` (64 nodes x 8 H100 in 2 fabrics, 200 requests over 7 days,
half reservations booked 0-3 days ahead, half on-demand starting on arrival). Revenue: an
on-demand GPU-hour pays the list price (1.00), a reserved one the catalog's reserved price
(0.85: list less 15 %). Online, in arrival order, our engine places what is admitted:

- ``fcfs``: every request that fits (the engine's ``default`` online column of benchmark 3);
- ``bid_price``: reservations pass ``neocloud.placement.admission`` (bid prices per hour of
  the pool from a demand forecast learnt online from the requests seen so far); on-demand
  requests are first come, first served;
- ``+steer N h``: a reservation that is declined or does not fit accepts the nearest start
  within N hours that is admitted (the ILP cannot move requests, so these columns can pass it).

Against the ILP (all requests known, fixed windows): best GPU-hours (objective GPU-hours) and
best revenue (objective revenue), each warm-started from offline packing. Run:
``make bench-placement-admission`` (``--seeds 1-5 --time-limit 10 --steer 6``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import optimality as opt

from neocloud.placement import BookingClass, GangRequest, Placement, PlacementEngine
from neocloud.placement.admission import (
    AdmissionPolicy,
    AdmissionRequest,
    Demand,
    DemandForecast,
    PoolFill,
    decide,
)

PRICE = {False: 1.00, True: 0.85}  # per GPU-hour: on-demand, reserved


@dataclass
class Outcome:
    gpu_hours: float
    revenue: float
    turned_away: int
    steered: int


def revenue(r: opt.Req) -> float:
    return r.gpu_hours * PRICE[r.reserved]


def run(
    nodes: list[opt.NodeSnapshot], reqs: list[opt.Req], policy: AdmissionPolicy, steer_h: float
) -> Outcome:
    e = PlacementEngine(nodes, policy="default", seed=1, horizon=30 * opt.DAY)
    forecast = DemandForecast()
    fill = PoolFill(len(nodes))
    out = Outcome(0.0, 0.0, 0, 0)
    for r in reqs:
        now = r.arrival
        forecast.observe(Demand(r.arrival, r.start, r.end, r.nodes, PRICE[r.reserved]))
        if not r.reserved:
            g = GangRequest("H100", r.nodes, id=r.id, end=r.end, cls=BookingClass.on_demand)
            p = e.place(g, now=now)
            start: float | None = r.start if isinstance(p, Placement) else None
        else:

            def gang(s: float, r: opt.Req = r) -> GangRequest:
                return GangRequest(
                    "H100", r.nodes, id=r.id, start=s, end=s + r.end - r.start,
                    cls=BookingClass.reserved,
                )  # fmt: skip

            def fits(s: float, now: float = now) -> bool:
                return isinstance(e.place(gang(s), now=now, dry_run=True), Placement)

            ask = AdmissionRequest(r.nodes, opt.GPUS, r.start, r.end, PRICE[True])
            v = decide(
                policy, ask, now=now, fill=fill, forecast=forecast, fits=fits,
                steer_s=steer_h * opt.HOUR,
            )  # fmt: skip
            start = v.start
            if start is not None:
                p = e.place(gang(start), now=now)
                assert isinstance(p, Placement), f"{r.id}: admitted but not placed"
                out.steered += start != r.start
        if start is None:
            out.turned_away += 1
            continue
        dur = r.end - r.start
        fill = fill.with_booking(start, start + dur, r.nodes)
        out.gpu_hours += r.gpu_hours
        out.revenue += revenue(r)
    return out


def ilp_revenue(reqs: list[opt.Req], fabrics: dict[str, int], limit: float) -> float:
    """The ILP of benchmark 3 with revenue as objective (warm-started from offline packing)."""
    packed = opt.count_admission(reqs, fabrics, offline=True)
    weights = {r.id: revenue(r) for r in reqs}
    return opt.solve_ilp(reqs, fabrics, limit, start=packed, weights=weights).objective


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1-5")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--time-limit", type=float, default=10.0, help="seconds per ILP")
    ap.add_argument("--steer", type=float, default=6.0, help="hours a reservation may move")
    ap.add_argument("--no-ilp", action="store_true", help="skip the ILPs (policy columns only)")
    args = ap.parse_args(argv)
    nodes = opt.fleet()
    fabrics: dict[str, int] = {}
    for nd in nodes:
        fabrics[nd.path[2]] = fabrics.get(nd.path[2], 0) + 1
    cols = [
        ("fcfs", AdmissionPolicy.fcfs, 0.0),
        ("bid_price", AdmissionPolicy.bid_price, 0.0),
        (f"fcfs +steer {args.steer:g} h", AdmissionPolicy.fcfs, args.steer),
        (f"bid_price +steer {args.steer:g} h", AdmissionPolicy.bid_price, args.steer),
    ]
    print(
        f"## Admission: {len(nodes)} nodes, {args.requests} requests over 7 days; ILP limit"
        f" {args.time_limit:g} s (HiGHS, one thread); prices on-demand 1.00, reserved 0.85"
    )
    print("GPU-hours (gap to ILP best GPU-h) / revenue (gap to ILP best revenue) / turned away")
    print("| seed | ILP GPU-h | ILP revenue | " + " | ".join(c[0] for c in cols) + " |")
    print("|" + "---:|" * (3 + len(cols)))
    gh: dict[str, list[float]] = {c[0]: [] for c in cols}
    rv: dict[str, list[float]] = {c[0]: [] for c in cols}
    away: dict[str, list[float]] = {c[0]: [] for c in cols}
    for seed in opt.parse_seeds(args.seeds):
        reqs = opt.instance(seed, args.requests)
        if args.no_ilp:
            best_gh = sum(r.gpu_hours for r in reqs)
            best_rv = sum(revenue(r) for r in reqs)
        else:
            packed = opt.count_admission(reqs, fabrics, offline=True)
            best_gh = opt.solve_ilp(reqs, fabrics, args.time_limit, start=packed).objective
            best_rv = ilp_revenue(reqs, fabrics, args.time_limit)
        row = f"| {seed} | {best_gh:,.0f} | {best_rv:,.0f} |"
        for name, pol, steer in cols:
            o = run(nodes, reqs, pol, steer)
            gh[name].append(1 - o.gpu_hours / best_gh)
            rv[name].append(1 - o.revenue / best_rv)
            away[name].append(o.turned_away / len(reqs))
            row += (
                f" {o.gpu_hours:,.0f} ({gh[name][-1]:.1%}) / {o.revenue:,.0f}"
                f" ({rv[name][-1]:.1%}) / {away[name][-1]:.1%} |"
            )
        print(row, flush=True)
    m = statistics.mean
    print("\n| policy (mean of seeds) | gap GPU-h | gap revenue | turned away |")
    print("|---|---:|---:|---:|")
    for name, _, _ in cols:
        print(f"| {name} | {m(gh[name]):.1%} | {m(rv[name]):.1%} | {m(away[name]):.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
