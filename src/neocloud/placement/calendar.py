"""Per-node booking calendars.

Each node holds its bookings as intervals. The invariant the engine keeps: at every instant the
sum of bookings on a node fits the node's capacity. Non-preemptible bookings therefore never
over-commit a node; a spot booking placed before a future reservation ends when it starts.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator

from neocloud.placement.model import INF, Booking, BookingClass, Resources


def _end(b: Booking) -> float:
    return INF if b.end is None else b.end


MILLI = 1000  # milli-GPU in one GPU


def peak_usage(bookings: Iterable[Booking], start: float, end: float | None) -> Resources:
    """Largest use of each resource at any instant of ``[start, end)`` (per resource).

    GPUs count whole-GPU bookings plus one GPU per shared GPU (label) that has a fraction
    running at that instant."""
    hits = [b for b in bookings if b.overlaps(start, end)]
    if not hits:
        return Resources()
    if len(hits) == 1:
        b = hits[0]
        return Resources(1, b.vcpus, b.ram_gib) if b.milli_gpu else b.resources
    if any(b.milli_gpu for b in hits):
        return usage_peaks(hits, start, end)[0]
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


def usage_peaks(
    bookings: Iterable[Booking], start: float, end: float | None
) -> tuple[Resources, dict[int, int]]:
    """Peak use over ``[start, end)`` (as ``peak_usage``) and the peak milli-GPU of each shared
    GPU label with a fraction in the window."""
    events: list[tuple[float, int, int, Booking]] = []
    for i, b in enumerate(bookings):
        if b.overlaps(start, end):
            events.append((max(b.start, start), 1, i, b))
            events.append((_end(b), 0, i, b))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    g = c = r = pg = pc = pr = 0
    milli: dict[int, int] = {}
    running: dict[int, int] = {}
    peaks: dict[int, int] = {}
    for _t, kind, _i, b in events:
        sign = 1 if kind else -1
        c += sign * b.vcpus
        r += sign * b.ram_gib
        if b.milli_gpu:
            lab = -1 if b.gpu_index is None else b.gpu_index
            n = running.get(lab, 0) + sign
            running[lab] = n
            if (sign > 0 and n == 1) or (sign < 0 and n == 0):
                g += sign
            m = milli.get(lab, 0) + sign * b.milli_gpu
            milli[lab] = m
            if m > peaks.get(lab, 0):
                peaks[lab] = m
        else:
            g += sign * b.gpus
        if g > pg:
            pg = g
        if c > pc:
            pc = c
        if r > pr:
            pr = r
    return Resources(pg, pc, pr), peaks


def fraction_fits(
    bookings: list[Booking],
    capacity: Resources,
    milli: int,
    rest: Resources,
    start: float,
    end: float | None,
    only: int | None = None,
) -> int | None:
    """The shared GPU label on which ``milli`` milli-GPU (with ``rest`` vCPU/RAM) fits during
    ``[start, end)`` beside ``bookings``, or ``None``. Labels already running fractions in the
    window come first, fullest first (best fit), then other labels of the node, then the
    lowest unused label (which takes a whole GPU for the window). ``only`` tries one label."""
    peak, in_window = usage_peaks(bookings, start, end)
    if not (peak + rest).fits_in(capacity):
        return None
    if only is not None:
        tries = [only]
    else:
        used = sorted({b.gpu_index for b in bookings if b.milli_gpu and b.gpu_index is not None})
        busy = sorted(in_window, key=lambda i: (-in_window[i], i))
        tries = busy + [i for i in used if i not in in_window]
        tries += [next(i for i in range(len(used) + 1) if i not in used)]
    for i in tries:
        if not 0 <= i < capacity.gpus or in_window.get(i, 0) + milli > MILLI:
            continue
        probe = Booking("?", "", start, end, BookingClass.spot, "", 0, 0, rest.vcpus,
                        rest.ram_gib, milli_gpu=milli, gpu_index=i)  # fmt: skip
        p2, m2 = usage_peaks([*bookings, probe], start, end)
        if p2.fits_in(capacity) and m2.get(i, 0) <= MILLI:
            return i
    return None


class NodeCalendar:
    """The bookings of one node and the questions asked of them."""

    __slots__ = ("bookings", "capacity", "fractions", "node_id")

    def __init__(self, node_id: str, capacity: Resources) -> None:
        self.node_id = node_id
        self.capacity = capacity
        self.bookings: dict[str, Booking] = {}
        self.fractions = 0  # fractional bookings among them

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

    def _considered(self, ignore_spot: bool) -> list[Booking]:
        return [b for b in self.bookings.values() if not (ignore_spot and b.cls.preemptible)]

    def fraction_gpu(
        self,
        milli: int,
        rest: Resources,
        start: float,
        end: float | None,
        *,
        ignore_spot: bool,
        only: int | None = None,
    ) -> int | None:
        """The shared GPU label that takes ``milli`` milli-GPU (and ``rest`` vCPU/RAM) during
        ``[start, end)``, or ``None`` (see ``fraction_fits``)."""
        others = self._considered(ignore_spot)
        return fraction_fits(others, self.capacity, milli, rest, start, end, only)

    def fits_booking(
        self, b: Booking, start: float, end: float | None, *, ignore_spot: bool
    ) -> bool:
        """Whether booking ``b``'s resources (its fraction on its label, if any) fit during
        ``[start, end)`` beside the node's bookings other than ``b``."""
        if not b.milli_gpu:
            return self.fits(b.resources, start, end, ignore_spot=ignore_spot)
        others = [x for x in self._considered(ignore_spot) if x.id != b.id]
        rest = Resources(0, b.vcpus, b.ram_gib)
        only = b.gpu_index
        return fraction_fits(others, self.capacity, b.milli_gpu, rest, start, end, only) is not None

    def fraction_room(self) -> int:
        """Most milli-GPU free from now on on one shared GPU label (-1: no shared GPU)."""
        if not self.fractions:
            return -1
        _, peaks = usage_peaks(self.bookings.values(), -INF, None)
        return MILLI - min(peaks.values())

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

    def firm_gaps(self, after: float = -INF) -> list[tuple[float, float]]:
        """The free intervals between non-preemptible bookings (none before the first or after
        the last), those ending after ``after``, earliest first."""
        spans = sorted((b.start, _end(b)) for b in self.bookings.values() if not b.cls.preemptible)
        gaps: list[tuple[float, float]] = []
        if not spans:
            return gaps
        reach = spans[0][1]
        for start, end in spans[1:]:
            if start > reach and start > after:
                gaps.append((reach, start))
            reach = max(reach, end)
        return gaps


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
        cal = self.nodes[booking.node_id]
        cal.bookings[booking.id] = booking
        if booking.milli_gpu:
            cal.fractions += 1
        self.by_id[booking.id] = booking
        if booking.end is not None:
            heapq.heappush(self._ends, (booking.end, booking.id))

    def remove(self, booking_id: str) -> Booking:
        booking = self.by_id.pop(booking_id)
        cal = self.nodes[booking.node_id]
        del cal.bookings[booking_id]
        if booking.milli_gpu:
            cal.fractions -= 1
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
