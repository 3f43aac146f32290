"""The placement engine: a snapshot of the fleet and its bookings, and the decisions on it.

Each decision is handed ``now`` (seconds). Bookings that ended by then leave first; the index
is then read, never the whole fleet. ``dry_run`` decisions and ``preempt`` change nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from neocloud.kernel.errors import Conflict, InvalidRequest, NotFound
from neocloud.placement.calendar import MILLI, Calendar, NodeCalendar
from neocloud.placement.extension import extend_allocation
from neocloud.placement.gangs import Avail, GangChooser, GangShape, domains_used
from neocloud.placement.index import BUSY, IDLE, SPOT, CapacityIndex, Topology
from neocloud.placement.model import (
    DEFAULT_LEVELS,
    INF,
    Booking,
    BookingClass,
    GangRequest,
    NoCapacity,
    NodeSnapshot,
    Offering,
    OfferingRequest,
    Placement,
    Preemption,
    Replacement,
    Request,
    Resources,
    SliceRequest,
)
from neocloud.placement.offerings import find_offerings
from neocloud.placement.policies import Policy, get_policy
from neocloud.placement.preemption import plan_preemption
from neocloud.placement.replacement import find_replacement
from neocloud.placement.single_node import pick_fraction_node, pick_slice_node, place_slice
from neocloud.placement.timefit import time_fit_gang

DAY = 86_400.0


@dataclass(slots=True)
class _Allocation:
    request: Request
    booking_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Window:
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


class PlacementEngine:
    """Decides where requests go on a fleet snapshot and keeps the index current.

    ``policy`` is a registered name (``first_fit``, ``random``, ``best_fit``, ``default``) or a
    ``Policy``; ``horizon`` (seconds) bounds the search for an earliest feasible start.
    """

    def __init__(
        self,
        nodes: Iterable[NodeSnapshot],
        *,
        levels: tuple[str, ...] = DEFAULT_LEVELS,
        policy: str | Policy = "default",
        seed: int = 0,
        horizon: float = 30 * DAY,
        bookings: Iterable[Booking] = (),
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
            self._touch(n.id)
        self.policy = get_policy(policy, seed=seed) if isinstance(policy, str) else policy
        self.horizon = horizon
        self.allocations: dict[str, _Allocation] = {}
        self._seq = 0
        for b in bookings:
            self.add_booking(b)

    # -- state -----------------------------------------------------------------------------

    def _touch(self, node_id: str) -> None:
        self.index.update(node_id, self.calendar.nodes[node_id], self.eligible[node_id], self.now)

    def advance(self, now: float) -> list[Booking]:
        """Move time to ``now`` (never backwards): bookings that ended leave; returns them."""
        self.now = max(self.now, now)
        self.index.now = max(self.index.now, self.now)
        gone = self.calendar.expired(self.now)
        for b in gone:
            self._remove(b.id)
        return gone

    def _add(self, b: Booking, request: Request | None = None) -> None:
        self.calendar.add(b)
        alloc = self.allocations.get(b.allocation_id)
        if alloc is None:
            alloc = self.allocations[b.allocation_id] = _Allocation(
                request if request is not None else SliceRequest(id=b.allocation_id)
            )
        alloc.booking_ids.append(b.id)
        self._touch(b.node_id)

    def _remove(self, booking_id: str) -> Booking:
        b = self.calendar.remove(booking_id)
        alloc = self.allocations.get(b.allocation_id)
        if alloc is not None:
            alloc.booking_ids.remove(booking_id)
            if not alloc.booking_ids:
                del self.allocations[b.allocation_id]
        self._touch(b.node_id)
        return b

    def add_booking(self, booking: Booking, *, request: Request | None = None) -> None:
        """Load an existing booking (e.g. from the database); refuses one that over-commits.

        ``request`` is what the allocation asked for (a gang's levels and segments guide a
        later ``replace``); bookings of one allocation share ``allocation_id``."""
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
        self._add(booking, request)

    def bookings(self, node_id: str) -> list[Booking]:
        return sorted(self.calendar.nodes[node_id], key=lambda b: (b.start, b.id))

    def allocation(self, allocation_id: str) -> list[Booking]:
        alloc = self.allocations.get(allocation_id)
        if alloc is None:
            raise NotFound(f"allocation {allocation_id} is not placed", code="allocation_not_found")
        return [self.calendar.by_id[b] for b in alloc.booking_ids]

    def _new_id(self, given: str) -> str:
        if given:
            if given in self.allocations:
                raise Conflict(f"allocation {given} is already placed", code="duplicate_allocation")
            return given
        self._seq += 1
        while f"alloc-{self._seq}" in self.allocations:
            self._seq += 1
        return f"alloc-{self._seq}"

    # -- windows and availability -----------------------------------------------------------

    def _window(self, request: Request, now: float) -> _Window:
        start = now if request.start is None else max(request.start, now)
        if request.end is not None and request.end <= start:
            raise InvalidRequest(
                f"the window ends ({request.end}) at or before it starts ({start})", param="end"
            )
        if request.cls.preemptible and start > now:
            raise InvalidRequest(
                "spot capacity starts now; it cannot be booked ahead", param="start"
            )
        return _Window(start, request.end, now, request.cls)

    def _spot_end(self, cal: NodeCalendar, w: _Window) -> float | None:
        """A spot booking ends when the next firm booking on its node starts."""
        nxt = cal.next_firm_start(w.start)
        if nxt is None:
            return w.end
        return nxt if w.end is None else min(w.end, nxt)

    def _node_fits(self, node_id: str, demand: Resources, w: _Window) -> bool:
        cal = self.calendar.nodes[node_id]
        if w.firm:
            return cal.fits(demand, w.start, w.end, ignore_spot=w.future)
        end = self._spot_end(cal, w)
        if end is not None and end <= w.start:
            return False
        return cal.fits(demand, w.start, end, ignore_spot=False)

    def _whole(self, node_id: str) -> Resources:
        return self.calendar.nodes[node_id].capacity

    def _fast_cats(self, w: _Window) -> tuple[int, ...]:
        return (IDLE, SPOT) if w.firm and w.future else (IDLE,)

    def _released(self, model: str, level: int, domain: str, w: _Window) -> list[str]:
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

    def _scan(self, model: str, level: int, domain: str, w: _Window, skip: set[str]) -> list[str]:
        """Slow path: busy (and, for spot, spot-holding) nodes of one domain that fit whole."""
        mi = self.index.models.get(model)
        if mi is None:
            return []
        out: list[str] = []
        for leaf in self.topology.leaves_under(level, domain):
            for node_id in mi.busy.get(leaf, ()):
                if node_id not in skip and self._node_fits(node_id, self._whole(node_id), w):
                    out.append(node_id)
        return out

    # -- place -----------------------------------------------------------------------------

    def place(
        self,
        request: Request,
        *,
        now: float,
        dry_run: bool = False,
        allow_preemption: bool = False,
    ) -> Placement | NoCapacity:
        """Place a slice or a gang; ``NoCapacity`` says why and when it would fit."""
        self.advance(now)
        if isinstance(request, GangRequest):
            result = self._place_gang(request, self.now, dry_run)
        else:
            result = place_slice(self, request, dry_run=dry_run)
        if isinstance(result, NoCapacity) and allow_preemption and not dry_run:
            plan = self.preempt(request, now=self.now)
            if isinstance(plan, Preemption):
                evicted = tuple(self._remove(v.id) for v in plan.victims)
                again = self.place(request, now=self.now)
                if isinstance(again, Placement):
                    return replace(again, preempted=evicted)
                for v in evicted:  # the plan did not hold: put the victims back
                    self._add(v)
        return result

    def _shape(self, r: GangRequest) -> GangShape:
        topo = self.topology
        if r.node_count < 1:
            raise InvalidRequest("a gang needs at least one node", param="node_count")
        req = topo.level_index(r.required_level)
        pref = None if r.preferred_level is None else topo.level_index(r.preferred_level)
        seg_level = topo.level_index(r.segment_level)
        if r.segment is not None:
            if r.segment < 1 or r.node_count % r.segment:
                raise InvalidRequest(
                    f"segment size {r.segment} does not divide {r.node_count} nodes",
                    param="segment",
                )
            if seg_level <= req:
                raise InvalidRequest(
                    f"segment level {r.segment_level} must lie below {r.required_level}",
                    param="segment_level",
                )
        return GangShape(r.node_count, req, pref, r.segment, seg_level)

    def _ancestor(self, level: int, domain: str, target: int) -> str:
        d = domain
        for lvl in range(level, target, -1):
            d = self.topology.parent[lvl][d]
        return d

    def _gang_domains(self, r: GangRequest, shape: GangShape) -> tuple[GangShape, list[str]]:
        """The domains at the required level a gang may use (narrowed by a pinned fabric)."""
        topo = self.topology
        if r.fabric is None:
            return shape, topo.domains(shape.required)
        pin_level = topo.level_index("fabric") if "fabric" in topo.levels else shape.required
        if pin_level > 0 and r.fabric not in topo.parent[pin_level]:
            raise InvalidRequest(f"unknown fabric {r.fabric!r}", param="fabric")
        if pin_level > shape.required:
            # pinned below the required level: the pinned fabric becomes the search domain
            return replace(shape, required=pin_level), [r.fabric]
        cands = [
            d
            for d in topo.domains(shape.required)
            if self._ancestor(shape.required, d, pin_level) == r.fabric
        ]
        return shape, cands

    def _gang_view(
        self,
        r: GangRequest,
        w: _Window,
        shape: GangShape,
        exclude: Iterable[str] = (),
        *,
        scan: bool = True,
    ) -> tuple[GangChooser, list[str]]:
        """The chooser for a gang: index categories and released nodes first; only if no
        domain fits that way (and a window could fit a gap), a calendar check of busy nodes."""
        shape, cands = self._gang_domains(r, shape)
        extra: list[str] = []
        for d in cands:
            extra.extend(self._released(r.gpu_model, shape.required, d, w))
        cats = self._fast_cats(w)
        chooser = GangChooser(
            Avail(self.index, r.gpu_model, cats, extra, exclude), self.policy, shape
        )
        gaps_possible = w.end is not None or not w.firm  # open-ended firm: no gap can hold it
        short = all(chooser.eff(shape.required, d) < shape.need for d in cands)
        if scan and gaps_possible and short:
            # most promising domains first; stop at the first that fits
            mi = self.index.models[r.gpu_model]
            skip = set(extra)
            for d in sorted(cands, key=lambda d: -chooser.eff(shape.required, d)):
                c = mi.counts[shape.required].get(d, [0, 0, 0])
                if chooser.eff(shape.required, d) + c[BUSY] < shape.need:
                    continue  # even every busy node would not be enough
                extra.extend(self._scan(r.gpu_model, shape.required, d, w, skip))
                chooser = GangChooser(
                    Avail(self.index, r.gpu_model, cats, extra, exclude), self.policy, shape
                )
                if chooser.eff(shape.required, d) >= shape.need:
                    break
        return chooser, cands

    def _place_gang(self, r: GangRequest, now: float, dry_run: bool) -> Placement | NoCapacity:
        w = self._window(r, now)
        shape = self._shape(r)
        if r.gpu_model not in self.index.models:
            return NoCapacity(
                f"no {r.gpu_model} nodes in the fleet",
                code="unknown_gpu_model",
                details={"gpu_model": r.gpu_model},
            )
        choice = None
        time_aware = getattr(self.policy, "time_aware", False)
        if time_aware and w.firm and w.end is not None and shape.segment is None:
            # a fixed window: best fit in time (segments keep the topology-aware choice)
            tshape, tcands = self._gang_domains(r, shape)
            choice = time_fit_gang(self, r, w, tshape, tcands)
        if choice is None:
            chooser, cands = self._gang_view(r, w, shape)
            shape = chooser.shape
            choice = chooser.choose(cands)
            if choice is None:
                return self._gang_no_capacity(r, w, shape, chooser, cands)
        domain, node_ids = choice
        alloc_id = self._new_id(r.id)
        bookings = []
        for i, node_id in enumerate(node_ids):
            cal = self.calendar.nodes[node_id]
            end = w.end if w.firm else self._spot_end(cal, w)
            cap = cal.capacity
            bookings.append(
                Booking(
                    f"{alloc_id}:{i}",
                    node_id,
                    w.start,
                    end,
                    r.cls,
                    r.owner,
                    r.priority,
                    cap.gpus,
                    cap.vcpus,
                    cap.ram_gib,
                    alloc_id,
                )
            )
        used = domains_used(self.topology, (self.nodes[n] for n in node_ids))
        truncated = self._commit(bookings, r, w, dry_run)
        return Placement(alloc_id, tuple(bookings), w.start, w.end, domain, used, truncated)

    def _commit(
        self, bookings: list[Booking], r: Request, w: _Window, dry_run: bool
    ) -> tuple[Booking, ...]:
        """Record bookings; spot bookings in the way of a future firm one end at its start."""
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
            self._remove(t.id)
            self._add(t)
        for b in bookings:
            self._add(b, r)
        return tuple(truncated)

    def _gang_no_capacity(
        self, r: GangRequest, w: _Window, shape: GangShape, chooser: GangChooser, cands: list[str]
    ) -> NoCapacity:
        level = self.topology.levels[shape.required]
        best, avail = chooser.best_available(cands)
        earliest = self._earliest_gang_start(r, w, shape, cands)
        where = f"{level} {best} has {avail}" if best else f"no {level} has any"
        return NoCapacity(
            f"no {level} can hold {shape.need} {r.gpu_model} nodes: {where} of {shape.need} free",
            details={
                "gpu_model": r.gpu_model,
                "needed": shape.need,
                "level": level,
                "best_domain": best,
                "best_available": avail,
                "segment": shape.segment,
            },
            earliest_start=earliest,
        )

    def _earliest_gang_start(
        self, r: GangRequest, w: _Window, shape: GangShape, cands: list[str]
    ) -> float | None:
        """Earliest start within the horizon when enough nodes in one domain are free of firm
        bookings (checked by a what-if placement at that start)."""
        mi = self.index.models.get(r.gpu_model)
        if mi is None or not w.firm:
            return None
        limit = self.now + self.horizon
        times: list[float] = []
        for d in cands:
            c = mi.counts[shape.required].get(d)
            base = 0 if c is None else c[IDLE] + c[SPOT]
            lst = mi.release[shape.required].get(d, [])
            m = shape.need - base
            for until, _ in lst[max(m - 1, 0) : max(m - 1, 0) + 4]:
                if until <= limit:
                    times.append(max(until, w.start))
        duration = None if w.end is None else w.end - w.start
        for t in sorted(set(times)):
            if t <= self.now:
                continue
            probe = replace(r, id="", start=t, end=None if duration is None else t + duration)
            pw = self._window(probe, self.now)
            chooser, pc = self._gang_view(probe, pw, shape, scan=False)
            if chooser.choose(pc) is not None:
                return t
        return None

    def _pick_slice_node(self, model: str, demand: Resources, w: _Window) -> str | None:
        return pick_slice_node(self, model, demand, w)

    def _pick_fraction_node(
        self, model: str, milli: int, rest: Resources, w: _Window
    ) -> tuple[str, int] | None:
        return pick_fraction_node(self, model, milli, rest, w)

    # -- release, failure, replacement ------------------------------------------------------

    def release(
        self, allocation_id: str, *, now: float, node_ids: Iterable[str] | None = None
    ) -> tuple[Booking, ...]:
        """Free an allocation (or only its bookings on ``node_ids``); returns what was freed."""
        self.advance(now)
        alloc = self.allocations.get(allocation_id)
        if alloc is None:
            raise NotFound(f"allocation {allocation_id} is not placed", code="allocation_not_found")
        only = None if node_ids is None else set(node_ids)
        ids = [
            bid
            for bid in alloc.booking_ids
            if only is None or self.calendar.by_id[bid].node_id in only
        ]
        return tuple(self._remove(bid) for bid in ids)

    def fail_node(self, node_id: str, *, now: float) -> tuple[Booking, ...]:
        """Take a node out of placement; returns its current and future bookings (the caller
        decides: replace gang members, fail instances, release)."""
        self.advance(now)
        if node_id not in self.nodes:
            raise NotFound(f"node {node_id} is not in the snapshot", code="node_not_found")
        self.eligible[node_id] = False
        self._touch(node_id)
        return tuple(self.bookings(node_id))

    def restore_node(self, node_id: str, *, now: float) -> None:
        """Make a node eligible again (after repair and burn-in)."""
        self.advance(now)
        if node_id not in self.nodes:
            raise NotFound(f"node {node_id} is not in the snapshot", code="node_not_found")
        self.eligible[node_id] = True
        self._touch(node_id)

    def replace(
        self, allocation_id: str, failed_node_id: str, *, now: float, dry_run: bool = False
    ) -> Replacement | NoCapacity:
        """A substitute for a failed node of an allocation, from the lowest domain around the
        failed node that has one free (its rack, then block, … up to the gang's required level,
        or its segment's domain). The failed node's booking is released and the substitute
        booked for the rest of its window."""
        self.advance(now)
        return find_replacement(self, allocation_id, failed_node_id, dry_run=dry_run)

    def _domain_chooser(
        self, r: GangRequest, w: _Window, shape: GangShape, domain: str, exclude: set[str]
    ) -> GangChooser:
        """A chooser for one domain: fast path first, then a calendar check of its nodes."""
        extra = self._released(r.gpu_model, shape.required, domain, w)
        cats = self._fast_cats(w)
        chooser = GangChooser(
            Avail(self.index, r.gpu_model, cats, extra, exclude), self.policy, shape
        )
        if chooser.eff(shape.required, domain) < shape.need:
            extra = extra + self._scan(r.gpu_model, shape.required, domain, w, set(extra) | exclude)
            chooser = GangChooser(
                Avail(self.index, r.gpu_model, cats, extra, exclude), self.policy, shape
            )
        return chooser

    def extend(
        self, allocation_id: str, new_end: float | None, *, now: float, dry_run: bool = False
    ) -> Placement | NoCapacity:
        """Push an allocation's end to ``new_end`` on the same nodes, all or nothing."""
        self.advance(now)
        return extend_allocation(self, allocation_id, new_end, dry_run=dry_run)

    # -- what-ifs ---------------------------------------------------------------------------

    def preempt(self, request: Request, *, now: float) -> Preemption | NoCapacity:
        """The cheapest spot bookings whose removal lets ``request`` start now (nothing moves)."""
        self.advance(now)
        return plan_preemption(self, request)

    def offerings(self, request: OfferingRequest, *, now: float) -> list[Offering]:
        """Up to ``request.k`` reservation options, earliest start first, then fewest blocks."""
        self.advance(now)
        return find_offerings(self, request)
