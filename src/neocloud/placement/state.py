"""The fleet's placement state: nodes, topology, calendars, the capacity index, and time.

``FleetState`` is what every decision module reads and changes (``single_node``, ``gangs``,
``timefit``, ``offerings``, ``preemption``, ``replacement``, ``extension``); the engine is a
facade over it. It owns the invariants: the index follows every booking change (``add``,
``remove``, ``commit``, ``set_eligible``), time never moves back (``advance``), and a window
(``Window``) is validated once (``window``) before any node is checked against it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from neocloud.kernel.errors import Conflict, InvalidRequest, NotFound
from neocloud.placement.calendar import MILLI, Calendar, NodeCalendar
from neocloud.placement.index import IDLE, SPOT, CapacityIndex, Topology
from neocloud.placement.model import (
    INF,
    Booking,
    BookingClass,
    NodeSnapshot,
    Request,
    Resources,
    SliceRequest,
)
from neocloud.placement.policies import PlacementPolicy


@dataclass(slots=True)
class Allocation:
    """What an allocation asked for and the ids of its bookings (one per node it holds)."""

    request: Request
    booking_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Window:
    """A request's ``[start, end)`` (seconds; ``end`` None: open-ended) as seen at ``now``.

    ``firm``: not preemptible (it may truncate spot in its way); ``future``: starts after now
    (spot running now does not block it: it ends when the window starts)."""

    start: float
    end: float | None
    now: float
    cls: BookingClass

    @property
    def firm(self) -> bool:
        return not self.cls.preemptible

    @property
    def future(self) -> bool:
        return self.start > self.now


class FleetState:
    """The snapshot decisions run on: ``nodes`` by id, their ``topology``, per-node
    ``calendar``, ``eligible`` flags, the ``index`` of free capacity, the ``policy``, the
    search ``horizon`` (seconds), the current time ``now`` and the placed ``allocations``."""

    def __init__(
        self,
        nodes: Iterable[NodeSnapshot],
        *,
        levels: tuple[str, ...],
        policy: PlacementPolicy,
        horizon: float,
    ) -> None:
        self.nodes: dict[str, NodeSnapshot] = {}
        for n in nodes:
            if n.id in self.nodes:
                raise InvalidRequest(f"node {n.id} appears twice in the snapshot")
            self.nodes[n.id] = n
        self.topology = Topology(levels, self.nodes.values())
        self.calendar = Calendar()
        self.eligible: dict[str, bool] = {}
        for n in self.nodes.values():
            self.calendar.add_node(n.id, Resources(n.gpu_count, n.vcpus, n.ram_gib))
            self.eligible[n.id] = n.eligible
        self.index = CapacityIndex(self.topology, self.nodes)
        self.now = -INF
        for n in self.nodes.values():
            self.touch(n.id)
        self.policy = policy
        self.horizon = horizon
        self.allocations: dict[str, Allocation] = {}
        self._seq = 0

    # -- bookings and time ------------------------------------------------------------------

    def touch(self, node_id: str) -> None:
        """Bring the index entry of ``node_id`` up to date with its calendar and eligibility."""
        self.index.update(node_id, self.calendar.nodes[node_id], self.eligible[node_id], self.now)

    def set_eligible(self, node_id: str, eligible: bool) -> None:
        """Take a node out of placement (``False``) or put it back; its bookings stay."""
        self.eligible[node_id] = eligible
        self.touch(node_id)

    def advance(self, now: float) -> list[Booking]:
        """Move time to ``now`` (never backwards): bookings that ended leave; returns them."""
        self.now = max(self.now, now)
        self.index.now = max(self.index.now, self.now)
        gone = self.calendar.expired(self.now)
        for b in gone:
            self.remove(b.id)
        return gone

    def add(self, b: Booking, request: Request | None = None) -> None:
        """Record booking ``b`` (unchecked: the caller made sure it fits) under its
        allocation; ``request`` is what a new allocation asked for (default: a slice)."""
        self.calendar.add(b)
        alloc = self.allocations.get(b.allocation_id)
        if alloc is None:
            alloc = self.allocations[b.allocation_id] = Allocation(
                request if request is not None else SliceRequest(id=b.allocation_id)
            )
        alloc.booking_ids.append(b.id)
        self.touch(b.node_id)

    def remove(self, booking_id: str) -> Booking:
        """Drop a booking (and its allocation once it holds none); returns the booking."""
        b = self.calendar.remove(booking_id)
        alloc = self.allocations.get(b.allocation_id)
        if alloc is not None:
            alloc.booking_ids.remove(booking_id)
            if not alloc.booking_ids:
                del self.allocations[b.allocation_id]
        self.touch(b.node_id)
        return b

    def add_booking(self, booking: Booking, *, request: Request | None = None) -> None:
        """Load an existing booking (e.g. from the database); refuses one that over-commits.

        A fraction without ``gpu_index`` gets its shared GPU label picked; a booking without
        ``allocation_id`` is its own allocation."""
        cal = self.calendar.nodes.get(booking.node_id)
        if cal is None:
            raise NotFound(f"node {booking.node_id} is not in the snapshot")
        if booking.milli_gpu:
            if not 0 < booking.milli_gpu < MILLI or booking.gpus:
                raise InvalidRequest(
                    f"booking {booking.id}: a fraction is 1-{MILLI - 1} milli-GPU and no"
                    " whole GPUs",
                    param="milli_gpu",
                )
            if booking.gpu_index is None:  # pick its shared GPU label
                rest = Resources(0, booking.vcpus, booking.ram_gib)
                label = cal.fraction_gpu(
                    booking.milli_gpu, rest, booking.start, booking.end, ignore_spot=False
                )
                booking = replace(booking, gpu_index=-1 if label is None else label)
        if not cal.fits_booking(booking, booking.start, booking.end, ignore_spot=False):
            raise Conflict(
                f"booking {booking.id} over-commits node {booking.node_id}",
                code="overlapping_booking",
                details={"node_id": booking.node_id, "booking_id": booking.id},
            )
        if not booking.allocation_id:
            booking = replace(booking, allocation_id=booking.id)
        self.add(booking, request)

    def commit(
        self, bookings: list[Booking], r: Request, w: Window, dry_run: bool
    ) -> tuple[Booking, ...]:
        """Record ``bookings`` for request ``r``; spot bookings in the way of a future firm
        one end at its start. Returns those truncated spot bookings (what they become);
        ``dry_run`` computes them and changes nothing."""
        truncated: list[Booking] = []
        if w.firm and w.future:
            for b in bookings:
                cal = self.calendar.nodes[b.node_id]
                if cal.fits_booking(b, b.start, b.end, ignore_spot=False):
                    continue  # room beside the spot bookings: they may stay
                for s in list(cal):
                    if s.cls.preemptible and s.overlaps(b.start, b.end):
                        truncated.append(replace(s, end=b.start))
        if dry_run:
            return tuple(truncated)
        for t in truncated:
            self.remove(t.id)
            self.add(t)
        for b in bookings:
            self.add(b, r)
        return tuple(truncated)

    def bookings(self, node_id: str) -> list[Booking]:
        """The bookings of a node, by start."""
        return sorted(self.calendar.nodes[node_id], key=lambda b: (b.start, b.id))

    def allocation(self, allocation_id: str) -> list[Booking]:
        """The bookings of a placed allocation; ``NotFound`` if it is not placed."""
        alloc = self.allocations.get(allocation_id)
        if alloc is None:
            raise NotFound(f"allocation {allocation_id} is not placed", code="allocation_not_found")
        return [self.calendar.by_id[b] for b in alloc.booking_ids]

    def new_id(self, given: str) -> str:
        """``given`` if free (``Conflict`` if placed already), else the next ``alloc-N``."""
        if given:
            if given in self.allocations:
                raise Conflict(f"allocation {given} is already placed", code="duplicate_allocation")
            return given
        self._seq += 1
        while f"alloc-{self._seq}" in self.allocations:
            self._seq += 1
        return f"alloc-{self._seq}"

    # -- windows and availability -----------------------------------------------------------

    def window(self, request: Request, now: float) -> Window:
        """The request's window from ``now`` on; ``InvalidRequest`` for an empty window or a
        spot request that starts later."""
        start = now if request.start is None else max(request.start, now)
        if request.end is not None and request.end <= start:
            raise InvalidRequest(
                f"the window ends ({request.end}) at or before it starts ({start})", param="end"
            )
        if request.cls.preemptible and start > now:
            raise InvalidRequest(
                "spot capacity starts now; it cannot be booked ahead", param="start"
            )
        return Window(start, request.end, now, request.cls)

    def spot_end(self, cal: NodeCalendar, w: Window) -> float | None:
        """A spot booking ends when the next firm booking on its node starts."""
        nxt = cal.next_firm_start(w.start)
        if nxt is None:
            return w.end
        return nxt if w.end is None else min(w.end, nxt)

    def node_fits(self, node_id: str, demand: Resources, w: Window) -> bool:
        """Whether ``demand`` fits on the node for window ``w`` (a firm future window ignores
        spot; a spot window ends at the node's next firm booking)."""
        cal = self.calendar.nodes[node_id]
        if w.firm:
            return cal.fits(demand, w.start, w.end, ignore_spot=w.future)
        end = self.spot_end(cal, w)
        if end is not None and end <= w.start:
            return False
        return cal.fits(demand, w.start, end, ignore_spot=False)

    def takes(self, node_id: str, gpus: int, milli_gpu: int = 0) -> bool:
        """Whether a single-node request of ``gpus`` whole GPUs (or ``milli_gpu`` of one) may
        land on the node: a whole-only node takes only a request for all of its GPUs."""
        node = self.nodes[node_id]
        return not node.whole_only or (not milli_gpu and gpus == node.gpu_count)

    def whole(self, node_id: str) -> Resources:
        """All of a node's resources."""
        return self.calendar.nodes[node_id].capacity

    def fast_cats(self, w: Window) -> tuple[int, ...]:
        """The index categories free for ``w`` without a calendar check."""
        return (IDLE, SPOT) if w.firm and w.future else (IDLE,)

    def released(self, model: str, level: int, domain: str, w: Window) -> list[str]:
        """Busy nodes free of firm bookings from ``w.start`` on (future firm windows only)."""
        mi = self.index.models.get(model)
        if mi is None or not (w.firm and w.future):
            return []
        lst = mi.release[level].get(domain, [])
        out: list[str] = []
        for until, node_id in lst:
            if until > w.start:
                break
            out.append(node_id)
        return out

    def scan(self, model: str, level: int, domain: str, w: Window, skip: set[str]) -> list[str]:
        """Slow path: busy (and, for spot, spot-holding) nodes of one domain that fit whole."""
        mi = self.index.models.get(model)
        if mi is None:
            return []
        out: list[str] = []
        for leaf in self.topology.leaves_under(level, domain):
            for node_id in mi.busy.get(leaf, ()):
                if node_id not in skip and self.node_fits(node_id, self.whole(node_id), w):
                    out.append(node_id)
        return out
