"""Admission of reservations for offerings and purchases: the inputs of
``neocloud.placement.admission`` read from the database, and its verdict in the API's words.

The forecast learns from the pool's allocations (a reservation's node holds count as one
request of its nodes, at the reserved price; an instance or a cluster as one request of its
GPUs in nodes, at the on-demand price, an open-ended one as running until now) and from the
on-demand requests that failed for capacity (demand that was there, though nothing ran); the
fill is the pool's firm allocations from now on, an open-ended one for as long as on-demand
work typically runs.
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
from neocloud.compute.tables import AllocationRow, ClusterRow, InstanceRow
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
    per_node = max((n.gpu_count for n in nodes), default=8)
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
    groups: dict[str, list[AllocationRow]] = defaultdict(list)
    for a in rows:
        if a.reservation_id is not None and a.instance_id is not None:
            continue  # an instance inside a reservation: the reservation's hold counts
        groups[a.reservation_id or a.cluster_id or a.instance_id or a.id].append(a)
    ran = [
        (ts(max(a.end_at for a in g if a.end_at)) - ts(min(a.start_at for a in g)))
        for g in groups.values()
        if g[0].reservation_id is None and all(a.end_at is not None for a in g)
    ]
    typical = sum(ran) / len(ran) if ran else 86_400.0  # how long on-demand work runs
    bookings: list[tuple[float, float, float]] = []
    demands: list[Demand] = []
    for g in groups.values():
        size = sum(a.gpu_count for a in g) / per_node  # in nodes (a fraction for a slice)
        start = ts(min(a.start_at for a in g))
        ends = [a.end_at for a in g]
        end = ts(max(e for e in ends if e)) if all(ends) else None
        price = rsv_price if g[0].reservation_id else od_price
        arrival = ts(min(a.created_at for a in g))
        demands.append(
            Demand(arrival, start, end if end is not None else max(t, start + 1), size, price)
        )
        # an open-ended instance is expected to run as long as on-demand work typically does
        bookings.append((start, end if end is not None else max(t, start) + typical, size))
    # requests turned away for capacity are demand too (they would have run as long as others)
    for created, size in _turned_away(s, gpu_model, now - window, per_node):
        demands.append(Demand(ts(created), ts(created), ts(created) + typical, size, od_price))
    for d in sorted(demands, key=lambda d: d.arrival):
        forecast.observe(d)
    fill = PoolFill(len(nodes), tuple(bookings))
    return Pool(policy, t, fill, forecast, config.admission_min_requests)


def _turned_away(
    s: Session, gpu_model: str, since: datetime, per_node: int
) -> list[tuple[datetime, float]]:
    """(when asked, nodes) of the on-demand instances and clusters that failed for capacity."""
    insts = s.execute(
        sa.select(InstanceRow.created_at, InstanceRow.gpu_count).where(
            InstanceRow.gpu_model == gpu_model,
            InstanceRow.cls == CapacityClass.ON_DEMAND.value,
            InstanceRow.cluster_id.is_(None),
            InstanceRow.state_reason == "no_capacity",
            InstanceRow.created_at >= since,
        )
    ).all()
    clus = s.execute(
        sa.select(ClusterRow.created_at, ClusterRow.node_count).where(
            ClusterRow.gpu_model == gpu_model,
            ClusterRow.cls == CapacityClass.ON_DEMAND.value,
            ClusterRow.state_reason == "no_capacity",
            ClusterRow.created_at >= since,
        )
    ).all()
    return [(c, g / per_node) for c, g in insts] + [(c, float(n)) for c, n in clus]


def declined_error(v: Verdict, currency: str, suggestion: dict[str, object]) -> Conflict:
    """The 409 of a purchase the policy declines, with the figures and a window it would take."""
    details: dict[str, object] = {
        "bid_price": {"amount": f"{v.bid_price:.4f}", "currency": currency, "per": "gpu_hour"},
        "price": {"amount": f"{v.price:.4f}", "currency": currency, "per": "gpu_hour"},
    }
    details.update(suggestion)
    return Conflict(v.reason, code="reservation_declined", param="offering_id", details=details)
