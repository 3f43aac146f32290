"""Admission of reservations by value: admit, decline with a reason, or steer to another start.

First come, first served (``fcfs``) admits every request that fits. ``bid_price`` sells a
reservation only when it is worth more than the capacity it blocks, the way airlines and hotels
sell seats: each hour of a GPU model's pool has a bid price, the expected revenue per GPU-hour
of the demand still to come for that hour that the reservation would turn away:

    bid(t) = p_late(t) x P(D(t) > c(t) - k)

with ``c(t)`` the nodes still free in hour ``t`` (capacity less the calendar's fill), ``k`` the
reservation's nodes and ``D(t)`` the nodes that requests arriving after now will ask for in
hour ``t`` (compound Poisson, normal approximation). ``DemandForecast`` learns ``D`` online
from recent requests (admitted or not: demand is demand): how many node-hours arrive per hour,
and how long before its hour each node-hour is asked for (the lead time), so the late share of
an hour ``tau`` ahead is the share of recent node-hours asked for less than ``tau`` ahead;
``p_late`` is their mean price per GPU-hour. A reservation paying ``v`` per GPU-hour is
admitted when ``v x GPU-hours >= sum over its hours of bid(t) x its GPUs``. On-demand capacity
is sold at list price and reservations at a discount, so hours that late on-demand demand will
fill are worth more than a reservation booked days ahead: those are the ones declined.

A declined request (or one that does not fit) may be steered: the nearest start within
``steer_s`` of the one asked for that fits and passes. Until the forecast has seen
``min_requests`` requests the policy falls back to first come, first served. Pure: times are
seconds on the caller's epoch, prices are per GPU-hour in the caller's currency (floats: bid
prices are estimates; the caller keeps money in ``Decimal``).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

from neocloud.kernel.errors import InvalidRequest

HOUR = 3600.0
UNITS = 32  # nodes of a block priced one by one (EMSR), at most


class AdmissionPolicy(StrEnum):
    fcfs = "fcfs"
    bid_price = "bid_price"


def get_admission_policy(name: str) -> AdmissionPolicy:
    """The policy called ``name``; ``InvalidRequest`` names the known ones otherwise."""
    try:
        return AdmissionPolicy(name)
    except ValueError:
        known = ", ".join(p.value for p in AdmissionPolicy)
        raise InvalidRequest(
            f"unknown admission policy {name!r}; known: {known}", param="admission_policy"
        ) from None


@dataclass(frozen=True, slots=True)
class Demand:
    """One request seen (admitted or not): asked at ``arrival`` for ``nodes`` nodes during
    ``[start, end)``, at ``price`` per GPU-hour."""

    arrival: float
    start: float
    end: float
    nodes: float  # a fraction for part of a node
    price: float


@dataclass(frozen=True, slots=True)
class LateDemand:
    """Nodes still to be asked for in one hour: mean, variance, mean price per GPU-hour."""

    mean: float
    var: float
    price: float


class DemandForecast:
    """Demand per hour of one GPU model's pool, learnt from the requests of the last
    ``window_s`` seconds (stationary over that window)."""

    def __init__(self, *, window_s: float = 3 * 86_400.0, min_span_s: float = 12 * HOUR) -> None:
        self.window_s = window_s
        self.min_span_s = min_span_s
        self._seen: deque[Demand] = deque()

    def sample(self, now: float) -> list[Demand]:
        """The requests that started in the last ``window_s`` (all of them have arrived by now,
        however far ahead they were booked: an unbiased sample of demand and lead times)."""
        while self._seen and self._seen[0].end < now - self.window_s:
            self._seen.popleft()  # arrival order: what ended long ago is dropped (mostly)
        return [d for d in self._seen if now - self.window_s <= d.start <= now]

    def observe(self, d: Demand) -> None:
        """Record a request (in arrival order)."""
        if d.end > d.start and d.nodes > 0:
            self._seen.append(d)

    def late(self, now: float, hours: Sequence[float]) -> list[LateDemand]:
        """For each hour starting at ``hours[i]``, the demand that will arrive after ``now``."""
        seen = self.sample(now)
        if not seen:
            return [LateDemand(0.0, 0.0, 0.0) for _ in hours]
        span = max(self.min_span_s, now - min(d.start for d in seen))
        node_hours = sum(d.nodes * (d.end - d.start) for d in seen) / HOUR
        rate = node_hours / (span / HOUR)  # nodes asked for per hour, on average
        # node-hours asked for less than tau ahead of their hour (and with k^2, and value):
        # a request with lead l and length L contributes k (clamp(tau, l, l + L) - l)
        items = [(d.start - d.arrival, d.end - d.arrival, d) for d in seen]
        nh = Ramp([(lo, hi, d.nodes / HOUR) for lo, hi, d in items])
        k2 = Ramp([(lo, hi, d.nodes * d.nodes / HOUR) for lo, hi, d in items])
        val = Ramp([(lo, hi, d.nodes * d.price / HOUR) for lo, hi, d in items])
        out: list[LateDemand] = []
        for t in hours:
            tau = t + HOUR / 2 - now  # lead time of the hour's middle
            late_nh = nh(tau)
            if late_nh <= 1e-12:
                out.append(LateDemand(0.0, 0.0, 0.0))
                continue
            mean = rate * late_nh / node_hours
            # compound Poisson: Var = E[count] E[k^2] = mean E[k^2] / E[k]
            out.append(LateDemand(mean, mean * k2(tau) / late_nh, val(tau) / late_nh))
        return out


class Ramp:
    """``R(x) = sum of w (clamp(x, lo, hi) - lo)`` over items ``(lo, hi, w)``, in O(log n) per
    point (prefix sums over the sorted ends)."""

    def __init__(self, items: Iterable[tuple[float, float, float]]) -> None:
        got = list(items)
        self._lo = sorted(lo for lo, _, _ in got)
        self._hi = sorted(hi for _, hi, _ in got)
        by_lo = sorted(got, key=lambda i: i[0])
        by_hi = sorted(got, key=lambda i: i[1])
        self._lo_w = _prefix(w for _, _, w in by_lo)
        self._lo_wx = _prefix(w * lo for lo, _, w in by_lo)
        self._hi_w = _prefix(w for _, _, w in by_hi)
        self._hi_wx = _prefix(w * hi for _, hi, w in by_hi)

    def __call__(self, x: float) -> float:
        i = bisect.bisect_left(self._lo, x)
        j = bisect.bisect_left(self._hi, x)
        rising = x * self._lo_w[i] - self._lo_wx[i]
        done = x * self._hi_w[j] - self._hi_wx[j]
        return rising - done


def _prefix(xs: Iterable[float]) -> list[float]:
    out = [0.0]
    for x in xs:
        out.append(out[-1] + x)
    return out


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


@dataclass(frozen=True)
class PoolFill:
    """A GPU model's pool: ``capacity`` nodes and the firm bookings ``(start, end, nodes)``."""

    capacity: int
    bookings: tuple[tuple[float, float, float], ...] = ()  # nodes may be fractions

    @cached_property
    def _used(self) -> Ramp:  # node-seconds booked before an instant
        return Ramp((s, e, float(n)) for s, e, n in self.bookings)

    def booked(self, t0: float, t1: float) -> float:
        """Nodes booked on average during ``[t0, t1)``."""
        return (self._used(t1) - self._used(t0)) / (t1 - t0)

    def with_booking(self, start: float, end: float, nodes: float) -> PoolFill:
        return PoolFill(self.capacity, (*self.bookings, (start, end, nodes)))


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """A reservation asked for: ``nodes`` x ``gpus_per_node`` GPUs during ``[start, end)`` at
    ``price`` per GPU-hour (what the book charges for it)."""

    nodes: int
    gpus_per_node: int
    start: float
    end: float
    price: float

    @property
    def gpu_hours(self) -> float:
        return self.nodes * self.gpus_per_node * (self.end - self.start) / HOUR

    def at(self, start: float) -> AdmissionRequest:
        """The same reservation moved to ``start``."""
        return AdmissionRequest(
            self.nodes, self.gpus_per_node, start, start + self.end - self.start, self.price
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """An admission decision. ``admitted``; else ``code`` and ``reason`` (a sentence for the
    API). ``bid_price``: mean bid price per GPU-hour over the window (what the capacity is
    expected to earn otherwise); ``price``: what the request pays per GPU-hour; ``start``: the
    start admitted (the one asked for, or a steered one), ``None`` if declined."""

    admitted: bool
    code: str
    reason: str
    price: float
    bid_price: float
    start: float | None = None
    alternative: float | None = None  # a start that would be admitted (for a decline)


@dataclass(frozen=True, slots=True)
class BidPricer:
    """Bid prices of one pool at ``now`` (see the module docstring)."""

    fill: PoolFill
    forecast: DemandForecast
    now: float

    def bid(self, req: AdmissionRequest) -> float:
        """Mean bid price per GPU-hour over ``req``'s window, for ``req``'s nodes."""
        first = math.floor(req.start / HOUR) * HOUR
        hours = [first + i * HOUR for i in range(math.ceil((req.end - first) / HOUR))]
        late = self.forecast.late(self.now, hours)
        total = 0.0
        for t, ld in zip(hours, late, strict=True):
            w = _overlap(t, t + HOUR, req.start, req.end) / HOUR
            free = self.fill.capacity - self.fill.booked(t, t + HOUR)
            # EMSR: the j-th node taken is the last one free when late demand exceeds free - j
            # (for big blocks, 32 nodes evenly spread stand for all of them)
            js = _spread(req.nodes, UNITS)
            units = sum(_p_exceeds(ld, free - j) for j in js) / len(js)
            total += w * ld.price * units
        return total / ((req.end - req.start) / HOUR)


def _spread(n: int, most: int) -> list[int]:
    """1..n, or ``most`` of them evenly spread."""
    if n <= most:
        return list(range(1, n + 1))
    return [1 + round(i * (n - 1) / (most - 1)) for i in range(most)]


def _p_exceeds(ld: LateDemand, room: float) -> float:
    """P(late demand > room), normal approximation with a half-node continuity correction."""
    if ld.mean <= 0:
        return 0.0
    if room < 0:
        return 1.0
    sd = math.sqrt(max(ld.var, 1e-9))
    return 0.5 * math.erfc((room + 0.5 - ld.mean) / (sd * math.sqrt(2)))


def decide(
    policy: AdmissionPolicy,
    req: AdmissionRequest,
    *,
    now: float,
    fill: PoolFill,
    forecast: DemandForecast,
    fits: Callable[[float], bool],
    steer_s: float = 0.0,
    min_requests: int = 20,
    step_s: float = HOUR,
    when: str = "",
) -> Verdict:
    """Admit ``req``, steer it to the nearest start within ``steer_s`` (steps of ``step_s``)
    that ``fits`` and passes, or decline it with a reason. ``fits(start)`` says whether the
    placement engine finds nodes for the reservation moved to ``start``; ``when`` names the
    start in the reason ("starting 2026-12-07T00:00:00+00:00")."""
    pricer = BidPricer(fill, forecast, now)
    use_bids = policy is AdmissionPolicy.bid_price and len(forecast.sample(now)) >= min_requests

    def passes(r: AdmissionRequest) -> tuple[bool, float]:
        if not use_bids:
            return True, 0.0
        b = pricer.bid(r)
        return r.price >= b, b

    ok, bid = passes(req)
    fit = fits(req.start)
    if ok and fit:
        return Verdict(True, "admitted", "admitted", req.price, bid, req.start)
    alt = None
    for s in steer_starts(req.start, now, steer_s, step_s):
        r2 = req.at(s)
        if passes(r2)[0] and fits(s):
            alt = s
            break
    if not fit:
        code = "no_capacity"
        reason = "no nodes are free for the whole window"
    else:
        code = "reservation_declined"
        reason = explain(req, bid, when)
    if alt is not None and steer_s > 0:
        return Verdict(True, "steered", reason, req.price, bid, alt, alt)
    return Verdict(False, code, reason, req.price, bid, None, alt)


def steer_starts(start: float, now: float, steer_s: float, step_s: float) -> Iterable[float]:
    """Starts within ``steer_s`` of ``start``, nearest first (later before earlier at equal
    distance), none before ``now``."""
    n = int(steer_s // step_s)
    for i in range(1, n + 1):
        for s in (start + i * step_s, start - i * step_s):
            if s >= now:
                yield s


def explain(req: AdmissionRequest, bid: float, when: str = "") -> str:
    """The API's sentence for a decline by bid price."""
    hours = (req.end - req.start) / HOUR
    span = f"{hours / 24:g}-day" if hours >= 24 and hours % 24 == 0 else f"{hours:.0f}-hour"
    where = f"the {span} window {when}" if when else f"the {span} window"
    return (
        f"declined: {where} is worth more to demand expected later"
        f" (bid price {bid:.4f} per GPU-hour vs your {req.price:.4f})"
    )
