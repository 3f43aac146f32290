"""Reservations in the system simulation: synthetic requests for capacity blocks, each quoted
and bought through compute's offerings at its arrival (so the admission policy decides), and
what became of them.

A request asks for ``nodes`` whole nodes for a fixed window ``[at + lead, + hours)``: the start
rounded up to the hour, the lead uniform over 0-3 days, half of them short (1-2 days) and half
long (7-14 days), sizes 1-16 nodes. It is sold when a quote for exactly that start shows an
offering; turned away otherwise, as declined (the policy) or no capacity (placement).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from neocloud.compute import offerings
from neocloud.compute.config import ComputeConfig
from neocloud.compute.tables import ReservationRow
from neocloud.db.engine import Database
from neocloud.kernel.auth import Principal
from neocloud.kernel.clock import VirtualClock

NODES = (1, 2, 2, 4, 4, 8, 8, 16)
GPUS_PER_NODE = 8


@dataclass(frozen=True)
class ReservationArrival:
    at_s: float
    lead_s: float
    nodes: int
    hours: int


def synthetic_reservations(
    rng: random.Random, *, seconds: float, per_day: float
) -> list[ReservationArrival]:
    """Poisson arrivals, ``per_day`` on average; half short (1-2 days), half long (7-14)."""
    out: list[ReservationArrival] = []
    t = 0.0
    while per_day > 0:
        t += rng.expovariate(per_day / 86_400.0)
        if t >= seconds:
            break
        days = rng.randint(1, 2) if rng.random() < 0.5 else rng.randint(7, 14)
        out.append(
            ReservationArrival(t, rng.uniform(0, 3 * 86_400.0), rng.choice(NODES), 24 * days)
        )
    return out


def buy_reservation(
    db: Database,
    clock: VirtualClock,
    actor: Principal,
    a: ReservationArrival,
    config: ComputeConfig,
) -> str:
    """Quote the window and buy it: ``sold``, ``declined`` (the policy) or ``no_capacity``."""
    now = clock.now()
    start = now + timedelta(seconds=a.lead_s)
    start = start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    q = offerings.OfferingQuery("H100", a.nodes, a.hours, start, start)
    got = offerings.quote(db=db, clock=clock, actor=actor, query=q, config=config)
    sold = [o for o in got.offerings if o.start_at == start]
    if sold:
        offerings.buy(db=db, clock=clock, actor=actor, offering_id=sold[0].id, config=config)
        return "sold"
    return "declined" if got.declined else "no_capacity"


def reservation_facts(
    db: Database, outcomes: Counter[str], hours: dict[str, float], start: datetime, end: datetime
) -> dict[str, Any]:
    """Requests by outcome, the GPU-hours sold inside ``[start, end)`` and their amount (a
    block's price pro rata of its time inside), and the whole blocks sold."""
    with db.transaction() as s:
        rows = list(s.query(ReservationRow))
    sold_h = 0.0
    amount = 0.0
    total_h = sum(
        r.node_count * GPUS_PER_NODE * (r.end_at - r.start_at).total_seconds() / 3600 for r in rows
    )
    total_amount = sum(float(r.price_amount) for r in rows)
    for r in rows:
        inside = max(0.0, (min(r.end_at, end) - max(r.start_at, start)).total_seconds())
        whole = (r.end_at - r.start_at).total_seconds()
        sold_h += r.node_count * GPUS_PER_NODE * inside / 3600
        amount += float(r.price_amount) * inside / whole if whole else 0.0
    n = sum(outcomes.values())
    return {
        "requests": n,
        "sold": outcomes["sold"],
        "declined": outcomes["declined"],
        "no_capacity": outcomes["no_capacity"],
        "turned_away_share": round((n - outcomes["sold"]) / n, 4) if n else math.nan,
        "gpu_hours_sold_in_run": round(sold_h, 1),
        "amount_in_run": round(amount, 2),
        "gpu_hours_asked": round(sum(hours.values()), 1),
        # whole blocks sold, also the part after the run (what the sale is worth)
        "gpu_hours_sold_total": round(total_h, 1),
        "amount_sold_total": round(total_amount, 2),
    }
