"""Admission of reservations for offerings and purchases: the inputs of
``neocloud.placement.admission`` read from the database, and its verdict in the API's words.

The forecast learns from the pool's allocations (a reservation's node holds count as one
request of its nodes, at the reserved price; on-demand instances at the on-demand price, an
open-ended one as running until now); the fill is the pool's firm allocations from now on.
With ``admission_policy = fcfs`` nothing is read and every offering that fits is shown.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.compute.config import ComputeConfig
from neocloud.compute.domain import CapacityClass
from neocloud.compute.prices import GpuPrices
from neocloud.compute.snapshot import node_eligible, ts
from neocloud.compute.tables import AllocationRow
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.errors import Conflict
from neocloud.placement.admission import (
    AdmissionPolicy,
    AdmissionRequest,
    Demand,
    DemandForecast,
    PoolFill,
    Verdict,
    decide,
    get_admission_policy,
)

HORIZON = timedelta(days=400)


@dataclass(frozen=True)
class Pool:
    """What the policy needs to judge reservations of one GPU model at ``now``."""

    policy: AdmissionPolicy
    now: float
    fill: PoolFill
    forecast: DemandForecast
    min_requests: int

    def judge(
        self, nodes: int, gpus_per_node: int, start: float, end: float, price: float, when: str = ""
    ) -> Verdict:
        """The verdict on ``nodes`` whole nodes for ``[start, end)`` at ``price`` per GPU-hour
        (the capacity itself was found free by placement)."""
        ask = AdmissionRequest(nodes, gpus_per_node, start, end, price)
        return decide(
            self.policy,
            ask,
            now=self.now,
            fill=self.fill,
            forecast=self.forecast,
            fits=lambda _s: True,
            min_requests=self.min_requests,
            when=when,
        )


def load_pool(
    s: Session, *, now: datetime, gpu_model: str, prices: GpuPrices, config: ComputeConfig
) -> Pool:
    """The pool of ``gpu_model`` as the configured policy sees it at ``now``."""
    policy = get_admission_policy(config.admission_policy)
    t = ts(now)
    if policy is AdmissionPolicy.fcfs:
        return Pool(policy, t, PoolFill(0), DemandForecast(), config.admission_min_requests)
    nodes = [
        n
        for n in s.scalars(sa.select(NodeRow).where(NodeRow.gpu_model == gpu_model))
        if node_eligible(n)
    ]
    per_node = {n.id: max(n.gpu_count, 1) for n in nodes}
    window = timedelta(seconds=config.admission_window_s)
    rows = s.scalars(
        sa.select(AllocationRow).where(
            AllocationRow.gpu_model == gpu_model,
            AllocationRow.cls.in_([CapacityClass.ON_DEMAND.value, CapacityClass.RESERVED.value]),
            sa.or_(AllocationRow.end_at.is_(None), AllocationRow.end_at > now - window),
        )
    ).all()
    od_price = float(prices.per_gpu_hour(gpu_model, CapacityClass.ON_DEMAND).amount)
    rsv_price = float(prices.reserved_per_gpu_hour(gpu_model).amount)
    forecast = DemandForecast(window_s=config.admission_window_s)
    bookings: list[tuple[float, float, int]] = []
    held: dict[str, list[AllocationRow]] = defaultdict(list)
    for a in rows:
        if a.reservation_id is not None:
            if a.instance_id is None:  # the reservation's hold; instances inside are in it
                held[a.reservation_id].append(a)
            continue
        share = a.gpu_count / per_node.get(a.node_id, max(a.gpu_count, 1))
        start, end = ts(a.start_at), ts(a.end_at) if a.end_at else None
        demand_end = end if end is not None else max(t, start + 1.0)
        forecast.observe(Demand(ts(a.created_at), start, demand_end, 1, od_price * share))
        bookings.append((start, end if end is not None else t + HORIZON.total_seconds(), 1))
    for group in held.values():
        a = group[0]
        start, end = ts(a.start_at), ts(a.end_at) if a.end_at else t + HORIZON.total_seconds()
        forecast.observe(Demand(ts(a.created_at), start, end, len(group), rsv_price))
        bookings.append((start, end, len(group)))
    fill = PoolFill(len(nodes), tuple(bookings))
    return Pool(policy, t, fill, forecast, config.admission_min_requests)


def declined_error(v: Verdict, currency: str, suggestion: dict[str, object]) -> Conflict:
    """The 409 of a purchase the policy declines, with the figures and a window it would take."""
    details: dict[str, object] = {
        "bid_price": {"amount": f"{v.bid_price:.4f}", "currency": currency, "per": "gpu_hour"},
        "price": {"amount": f"{v.price:.4f}", "currency": currency, "per": "gpu_hour"},
    }
    details.update(suggestion)
    return Conflict(v.reason, code="reservation_declined", param="offering_id", details=details)
