"""Invariants of the placement engine under random sequences of operations (hypothesis).

After every step: no node is over-committed at any instant (so firm bookings never overlap),
and the incremental index equals one rebuilt from scratch. Each placement is all-or-nothing,
respects its required level and its segments, and a release restores the index exactly.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from neocloud.placement import (
    BookingClass,
    GangRequest,
    NoCapacity,
    OfferingRequest,
    Placement,
    PlacementEngine,
    Preemption,
    SliceRequest,
)
from neocloud.placement.calendar import peak_usage
from neocloud.placement.index import CapacityIndex

from .builders import grid_fleet

CLASSES = st.sampled_from(list(BookingClass))
LEVELS = ("region", "zone", "fabric", "block", "rack")


class EngineMachine(RuleBasedStateMachine):
    @initialize(policy=st.sampled_from(["default", "best_fit", "first_fit", "random"]))
    def build(self, policy: str) -> None:
        self.engine = PlacementEngine(grid_fleet(2, 2, 2, 2, gpus=4), policy=policy)
        self.now = 0.0

    def _window(
        self, cls: BookingClass, delay: int, length: int | None
    ) -> tuple[float, float | None]:
        start = self.now if cls is BookingClass.spot else self.now + delay
        return (start, None if length is None else start + length)

    def _check(self, result: Placement | NoCapacity, before: int) -> None:
        e = self.engine
        if isinstance(result, NoCapacity):
            assert len(e.calendar.by_id) == before  # all or nothing
            return
        assert len(e.calendar.by_id) >= before + len(result.bookings) - len(result.preempted)
        for b in result.bookings:
            assert b.id in e.calendar.by_id

    @rule(
        n=st.integers(1, 9),
        cls=CLASSES,
        delay=st.integers(0, 30),
        length=st.one_of(st.none(), st.integers(1, 60)),
        level=st.sampled_from(["zone", "fabric", "block"]),
        segment=st.sampled_from([None, 2]),
    )
    def place_gang(
        self,
        n: int,
        cls: BookingClass,
        delay: int,
        length: int | None,
        level: str,
        segment: int | None,
    ) -> None:
        start, end = self._window(cls, delay, length)
        if segment is not None and (n % segment or level == "block"):
            segment = None
        req = GangRequest(
            "H100", n, required_level=level, segment=segment, segment_level="rack",
            start=start, end=end, cls=cls,
        )  # fmt: skip
        before = len(self.engine.calendar.by_id)
        result = self.engine.place(req, now=self.now)
        self._check(result, before)
        if isinstance(result, Placement):
            assert len(result.bookings) == n
            assert len(set(result.node_ids)) == n
            li = LEVELS.index(level)
            assert len({self.engine.nodes[x].path[li] for x in result.node_ids}) == 1
            if segment is not None:
                per_rack: dict[str, int] = {}
                for x in result.node_ids:
                    rack = self.engine.nodes[x].path[-1]
                    per_rack[rack] = per_rack.get(rack, 0) + 1
                assert all(c % segment == 0 for c in per_rack.values())

    @rule(
        gpus=st.integers(0, 4),
        vcpus=st.integers(0, 64),
        cls=CLASSES,
        delay=st.integers(0, 30),
        length=st.one_of(st.none(), st.integers(1, 60)),
        preempt=st.booleans(),
    )
    def place_slice(
        self, gpus: int, vcpus: int, cls: BookingClass, delay: int, length: int | None,
        preempt: bool,
    ) -> None:  # fmt: skip
        start, end = self._window(cls, delay, length)
        req = SliceRequest(gpus=gpus, vcpus=vcpus, start=start, end=end, cls=cls, priority=1)
        before = len(self.engine.calendar.by_id)
        result = self.engine.place(req, now=self.now, allow_preemption=preempt)
        self._check(result, before)

    @rule(n=st.integers(1, 8), duration=st.integers(1, 50), k=st.integers(1, 3))
    def offerings_are_placeable(self, n: int, duration: int, k: int) -> None:
        e = self.engine
        before = e.index.snapshot()
        offers = e.offerings(OfferingRequest("H100", n, duration=duration, k=k), now=self.now)
        assert len(offers) <= k
        assert [o.start for o in offers] == sorted(o.start for o in offers)
        for o in offers:
            assert o.end - o.start == duration
            req = GangRequest(
                "H100", n, fabric=o.domain, start=o.start, end=o.end, cls=BookingClass.reserved
            )
            assert isinstance(e.place(req, now=self.now, dry_run=True), Placement)
        assert e.index.snapshot() == before

    @rule(n=st.integers(1, 8), duration=st.integers(1, 50))
    def first_offering_is_the_earliest_start(self, n: int, duration: int) -> None:
        e = self.engine
        offers = e.offerings(OfferingRequest("H100", n, duration=duration, k=1), now=self.now)
        # any feasible start is now or the end of a booking: try them all, in order
        ends = {b.end for b in e.calendar.by_id.values() if b.end is not None and b.end > self.now}
        earliest = None
        for t in sorted({self.now + 1} | ends):
            req = GangRequest("H100", n, start=t, end=t + duration, cls=BookingClass.reserved)
            if isinstance(e.place(req, now=self.now, dry_run=True), Placement):
                earliest = t
                break
        if earliest is not None:
            assert offers, f"nothing offered; a gang fits at {earliest}"
            assert offers[0].start <= earliest

    @rule(n=st.integers(1, 16), length=st.one_of(st.none(), st.integers(1, 60)))
    def earliest_start_is_feasible(self, n: int, length: int | None) -> None:
        e = self.engine
        end = None if length is None else self.now + length
        req = GangRequest("H100", n, end=end, cls=BookingClass.reserved)
        result = e.place(req, now=self.now, dry_run=True)
        if isinstance(result, NoCapacity) and result.earliest_start is not None:
            t = result.earliest_start
            later = GangRequest(
                "H100", n, start=t, end=None if length is None else t + length,
                cls=BookingClass.reserved,
            )  # fmt: skip
            assert isinstance(e.place(later, now=self.now, dry_run=True), Placement)

    @rule(gpus=st.integers(1, 4), length=st.one_of(st.none(), st.integers(1, 60)))
    def slice_earliest_start_is_feasible(self, gpus: int, length: int | None) -> None:
        e = self.engine
        end = None if length is None else self.now + length
        req = SliceRequest(gpus=gpus, end=end, cls=BookingClass.reserved)
        result = e.place(req, now=self.now, dry_run=True)
        if isinstance(result, NoCapacity) and result.earliest_start is not None:
            t = result.earliest_start
            later = SliceRequest(
                gpus=gpus, start=t, end=None if length is None else t + length,
                cls=BookingClass.reserved,
            )  # fmt: skip
            assert isinstance(e.place(later, now=self.now, dry_run=True), Placement)

    @rule(n=st.integers(1, 4), priority=st.integers(0, 3), gpus=st.integers(1, 4))
    def fill_with_spot(self, n: int, priority: int, gpus: int) -> None:
        spot = BookingClass.spot
        self.engine.place(GangRequest("H100", n, cls=spot, priority=priority), now=self.now)
        self.engine.place(SliceRequest(gpus=gpus, cls=spot, priority=priority), now=self.now)

    @rule(n=st.integers(1, 8), gpus=st.integers(1, 4), gang=st.booleans())
    def preemption_plan_makes_room(self, n: int, gpus: int, gang: bool) -> None:
        e = self.engine
        req: GangRequest | SliceRequest = (
            GangRequest("H100", n, priority=2) if gang else SliceRequest(gpus=gpus, priority=2)
        )
        before = e.index.snapshot()
        plan = e.preempt(req, now=self.now)
        assert e.index.snapshot() == before  # a what-if
        if isinstance(plan, Preemption):
            assert all(v.cls is BookingClass.spot for v in plan.victims)
            result = e.place(req, now=self.now, allow_preemption=True)
            assert isinstance(result, Placement)
            assert {v.id for v in result.preempted} <= {v.id for v in plan.victims}

    @rule(data=st.data(), more=st.one_of(st.none(), st.integers(1, 60)))
    def extend_one(self, data: st.DataObject, more: int | None) -> None:
        e = self.engine
        finite = sorted(
            a for a, alloc in e.allocations.items()
            if all(e.calendar.by_id[b].end is not None for b in alloc.booking_ids)
        )  # fmt: skip
        if not finite:
            return
        alloc_id = data.draw(st.sampled_from(finite))
        before = {b.id: b.end for b in e.allocation(alloc_id)}
        end = None if more is None else max(x for x in before.values() if x is not None) + more
        result = e.extend(alloc_id, end, now=self.now)
        after = {b.id: b.end for b in e.allocation(alloc_id)}
        if isinstance(result, NoCapacity):
            assert after == before  # all or nothing
        else:
            assert set(after.values()) == {end}

    @rule(data=st.data())
    def release_one(self, data: st.DataObject) -> None:
        allocs = sorted(self.engine.allocations)
        if allocs:
            self.engine.release(data.draw(st.sampled_from(allocs)), now=self.now)

    @rule(n=st.integers(1, 6), length=st.one_of(st.none(), st.integers(1, 40)))
    def place_then_release_restores(self, n: int, length: int | None) -> None:
        before = self.engine.index.snapshot()
        end = None if length is None else self.now + length
        result = self.engine.place(GangRequest("H100", n, end=end), now=self.now)
        if isinstance(result, Placement):
            self.engine.release(result.allocation_id, now=self.now)
        assert self.engine.index.snapshot() == before

    @rule(step=st.integers(1, 40))
    def advance(self, step: int) -> None:
        self.now += step
        self.engine.advance(self.now)

    @rule(data=st.data())
    def fail_and_replace(self, data: st.DataObject) -> None:
        e = self.engine
        node = data.draw(st.sampled_from(sorted(e.nodes)))
        for b in e.fail_node(node, now=self.now):
            if b.allocation_id in e.allocations and b.id in e.calendar.by_id:
                e.replace(b.allocation_id, node, now=self.now)

    @rule(data=st.data())
    def restore(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from(sorted(self.engine.nodes)))
        self.engine.restore_node(node, now=self.now)

    @invariant()
    def never_over_committed(self) -> None:
        for cal in self.engine.calendar.nodes.values():
            assert peak_usage(cal, -1e18, None).fits_in(cal.capacity)
            firm = [b for b in cal if not b.cls.preemptible and b.gpus == cal.capacity.gpus]
            for i, a in enumerate(firm):
                for b in firm[i + 1 :]:
                    assert not a.overlaps(b.start, b.end)

    @invariant()
    def index_matches_a_rebuild(self) -> None:
        e = self.engine
        fresh = CapacityIndex(e.topology, e.nodes)
        for node_id in e.nodes:
            fresh.update(node_id, e.calendar.nodes[node_id], e.eligible[node_id], e.now)
        assert fresh.snapshot() == e.index.snapshot()


EngineMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_engine_machine = EngineMachine.TestCase
