"""Per-node booking calendars.

Each node holds its bookings as intervals. The invariant the engine keeps: at every instant the
sum of bookings on a node fits the node's capacity. Non-preemptible bookings therefore never
over-commit a node; a spot booking placed before a future reservation ends when it starts.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator

from neocloud.placement.model import INF, Booking, Resources


def _end(b: Booking) -> float:
    return INF if b.end is None else b.end


def peak_usage(bookings: Iterable[Booking], start: float, end: float | None) -> Resources:
    """Largest use of each resource at any instant of ``[start, end)`` (per resource)."""
    hits = [b for b in bookings if b.overlaps(start, end)]
    if not hits:
        return Resources()
    if len(hits) == 1:
        return hits[0].resources
    events: list[tuple[float, int, int, int, int]] = []
    for b in hits:
        events.append((max(b.start, start), 1, b.gpus, b.vcpus, b.ram_gib))
        events.append((_end(b), 0, -b.gpus, -b.vcpus, -b.ram_gib))
    events.sort()  # ends (0) before starts (1) at the same instant: half-open intervals
    g = c = r = pg = pc = pr = 0
    for _t, _k, dg, dc, dr in events:
        g += dg
        c += dc
        r += dr
        if g > pg:
            pg = g
        if c > pc:
            pc = c
        if r > pr:
            pr = r
    return Resources(pg, pc, pr)


class NodeCalendar:
    """The bookings of one node and the questions asked of them."""

    __slots__ = ("bookings", "capacity", "node_id")

    def __init__(self, node_id: str, capacity: Resources) -> None:
        self.node_id = node_id
        self.capacity = capacity
        self.bookings: dict[str, Booking] = {}

    def __iter__(self) -> Iterator[Booking]:
        return iter(self.bookings.values())

    def fits(
        self, demand: Resources, start: float, end: float | None, *, ignore_spot: bool
    ) -> bool:
        """Whether ``demand`` fits during ``[start, end)``; spot bookings may be ignored (they
        are truncated or preempted by the caller)."""
        if not self.bookings:
            return demand.fits_in(self.capacity)
        others = (b for b in self.bookings.values() if not (ignore_spot and b.cls.preemptible))
        return (peak_usage(others, start, end) + demand).fits_in(self.capacity)

    def free_ahead(self) -> Resources:
        """Resources free at every instant from now on (all remaining bookings counted)."""
        return self.capacity - peak_usage(self.bookings.values(), -INF, None)

    def next_firm_start(self, after: float) -> float | None:
        """Start of the first non-preemptible booking that starts strictly after ``after``."""
        starts = [
            b.start for b in self.bookings.values() if not b.cls.preemptible and b.start > after
        ]
        return min(starts) if starts else None

    def firm_until(self) -> float:
        """From when on the node is free of non-preemptible bookings (``-inf`` if none,
        ``inf`` if one is open-ended)."""
        latest = -INF
        for b in self.bookings.values():
            if not b.cls.preemptible:
                latest = max(latest, _end(b))
        return latest

    def only_spot(self) -> bool:
        return bool(self.bookings) and all(b.cls.preemptible for b in self.bookings.values())

    def active_at(self, t: float) -> list[Booking]:
        return [b for b in self.bookings.values() if b.start <= t < _end(b)]


class Calendar:
    """All node calendars plus a heap of booking ends, so expired bookings leave in order."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeCalendar] = {}
        self.by_id: dict[str, Booking] = {}
        self._ends: list[tuple[float, str]] = []

    def add_node(self, node_id: str, capacity: Resources) -> None:
        self.nodes[node_id] = NodeCalendar(node_id, capacity)

    def add(self, booking: Booking) -> None:
        if booking.id in self.by_id:
            raise ValueError(f"booking {booking.id} already exists")
        self.nodes[booking.node_id].bookings[booking.id] = booking
        self.by_id[booking.id] = booking
        if booking.end is not None:
            heapq.heappush(self._ends, (booking.end, booking.id))

    def remove(self, booking_id: str) -> Booking:
        booking = self.by_id.pop(booking_id)
        del self.nodes[booking.node_id].bookings[booking_id]
        return booking  # its heap entry goes stale and is skipped when popped

    def expired(self, now: float) -> list[Booking]:
        """Pop the bookings that ended at or before ``now`` (still held until removed)."""
        out: list[Booking] = []
        while self._ends and self._ends[0][0] <= now:
            end, bid = heapq.heappop(self._ends)
            b = self.by_id.get(bid)
            if b is not None and b.end == end:
                out.append(b)
        return out
