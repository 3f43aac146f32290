"""The placement engine: a facade over the fleet's state (``state.FleetState``) and the
decision modules that read and change it.

Each decision is handed ``now`` (seconds). Bookings that ended by then leave first; the index
is then read, never the whole fleet. ``dry_run`` decisions and ``preempt`` change nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from neocloud.kernel.errors import NotFound
from neocloud.placement.calendar import Calendar
from neocloud.placement.extension import extend_allocation
from neocloud.placement.gang_placement import place_gang
from neocloud.placement.index import CapacityIndex, Topology
from neocloud.placement.model import (
    DEFAULT_LEVELS,
    Booking,
    GangRequest,
    NoCapacity,
    NodeSnapshot,
    Offering,
    OfferingRequest,
    Placement,
    Preemption,
    Replacement,
    Request,
)
from neocloud.placement.offerings import find_offerings
from neocloud.placement.policies import PlacementPolicy, get_policy
from neocloud.placement.preemption import plan_preemption
from neocloud.placement.replacement import find_replacement
from neocloud.placement.single_node import place_slice
from neocloud.placement.state import Allocation, FleetState

DAY = 86_400.0


class PlacementEngine:
    """Decides where requests go on a fleet snapshot and keeps the index current.

    ``policy`` is a registered name (``first_fit``, ``random``, ``best_fit``, ``default``) or a
    ``PlacementPolicy``; ``horizon`` (seconds) bounds the search for an earliest feasible
    start. ``state`` is the snapshot itself; ``nodes``, ``topology``, ``calendar``,
    ``eligible``, ``index``, ``allocations``, ``now``, ``policy`` and ``horizon`` read it.
    """

    def __init__(
        self,
        nodes: Iterable[NodeSnapshot],
        *,
        levels: tuple[str, ...] = DEFAULT_LEVELS,
        policy: str | PlacementPolicy = "default",
        seed: int = 0,
        horizon: float = 30 * DAY,
        bookings: Iterable[Booking] = (),
    ) -> None:
        chosen = get_policy(policy, seed=seed) if isinstance(policy, str) else policy
        self.state = FleetState(nodes, levels=levels, policy=chosen, horizon=horizon)
        for b in bookings:
            self.state.add_booking(b)

    # -- the snapshot, read through -----------------------------------------------------------

    @property
    def nodes(self) -> dict[str, NodeSnapshot]:
        return self.state.nodes

    @property
    def topology(self) -> Topology:
        return self.state.topology

    @property
    def calendar(self) -> Calendar:
        return self.state.calendar

    @property
    def eligible(self) -> dict[str, bool]:
        return self.state.eligible

    @property
    def index(self) -> CapacityIndex:
        return self.state.index

    @property
    def allocations(self) -> dict[str, Allocation]:
        return self.state.allocations

    @property
    def now(self) -> float:
        return self.state.now

    @property
    def policy(self) -> PlacementPolicy:
        return self.state.policy

    @policy.setter
    def policy(self, policy: PlacementPolicy) -> None:
        self.state.policy = policy

    @property
    def horizon(self) -> float:
        """How far ahead (seconds) searches for an earliest start look."""
        return self.state.horizon

    @horizon.setter
    def horizon(self, horizon: float) -> None:
        self.state.horizon = horizon

    # -- state -----------------------------------------------------------------------------

    def advance(self, now: float) -> list[Booking]:
        """Move time to ``now`` (never backwards): bookings that ended leave; returns them."""
        return self.state.advance(now)

    def add_booking(self, booking: Booking, *, request: Request | None = None) -> None:
        """Load an existing booking (e.g. from the database); refuses one that over-commits.

        ``request`` is what the allocation asked for (a gang's levels and segments guide a
        later ``replace``); bookings of one allocation share ``allocation_id``."""
        self.state.add_booking(booking, request=request)

    def bookings(self, node_id: str) -> list[Booking]:
        return self.state.bookings(node_id)

    def allocation(self, allocation_id: str) -> list[Booking]:
        return self.state.allocation(allocation_id)

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
        s = self.state
        s.advance(now)
        if isinstance(request, GangRequest):
            result = place_gang(s, request, dry_run=dry_run)
        else:
            result = place_slice(s, request, dry_run=dry_run)
        if isinstance(result, NoCapacity) and allow_preemption and not dry_run:
            plan = self.preempt(request, now=s.now)
            if isinstance(plan, Preemption):
                evicted = tuple(s.remove(v.id) for v in plan.victims)
                again = self.place(request, now=s.now)
                if isinstance(again, Placement):
                    return replace(again, preempted=evicted)
                for v in evicted:  # the plan did not hold: put the victims back
                    s.add(v)
        return result

    # -- release, failure, replacement ------------------------------------------------------

    def release(
        self, allocation_id: str, *, now: float, node_ids: Iterable[str] | None = None
    ) -> tuple[Booking, ...]:
        """Free an allocation (or only its bookings on ``node_ids``); returns what was freed."""
        s = self.state
        s.advance(now)
        alloc = s.allocations.get(allocation_id)
        if alloc is None:
            raise NotFound(f"allocation {allocation_id} is not placed", code="allocation_not_found")
        only = None if node_ids is None else set(node_ids)
        by_id = s.calendar.by_id
        ids = [bid for bid in alloc.booking_ids if only is None or by_id[bid].node_id in only]
        return tuple(s.remove(bid) for bid in ids)

    def fail_node(self, node_id: str, *, now: float) -> tuple[Booking, ...]:
        """Take a node out of placement; returns its current and future bookings (the caller
        decides: replace gang members, fail instances, release)."""
        self.state.advance(now)
        if node_id not in self.state.nodes:
            raise NotFound(f"node {node_id} is not in the snapshot", code="node_not_found")
        self.state.set_eligible(node_id, False)
        return tuple(self.state.bookings(node_id))

    def restore_node(self, node_id: str, *, now: float) -> None:
        """Make a node eligible again (after repair and burn-in)."""
        self.state.advance(now)
        if node_id not in self.state.nodes:
            raise NotFound(f"node {node_id} is not in the snapshot", code="node_not_found")
        self.state.set_eligible(node_id, True)

    def replace(
        self, allocation_id: str, failed_node_id: str, *, now: float, dry_run: bool = False
    ) -> Replacement | NoCapacity:
        """A substitute for a failed node of an allocation, from the lowest domain around the
        failed node that has one free (its rack, then block, … up to the gang's required level,
        or its segment's domain). The failed node's booking is released and the substitute
        booked for the rest of its window."""
        self.state.advance(now)
        return find_replacement(self.state, allocation_id, failed_node_id, dry_run=dry_run)

    def extend(
        self, allocation_id: str, new_end: float | None, *, now: float, dry_run: bool = False
    ) -> Placement | NoCapacity:
        """Push an allocation's end to ``new_end`` on the same nodes, all or nothing."""
        self.state.advance(now)
        return extend_allocation(self.state, allocation_id, new_end, dry_run=dry_run)

    # -- what-ifs ---------------------------------------------------------------------------

    def preempt(self, request: Request, *, now: float) -> Preemption | NoCapacity:
        """The cheapest spot bookings whose removal lets ``request`` start now (nothing moves)."""
        self.state.advance(now)
        return plan_preemption(self.state, request)

    def offerings(self, request: OfferingRequest, *, now: float) -> list[Offering]:
        """Up to ``request.k`` reservation options, earliest start first, then fewest blocks."""
        self.state.advance(now)
        return find_offerings(self.state, request)
