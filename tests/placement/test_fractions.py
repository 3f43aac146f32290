"""Fractional-GPU slices in the time-aware engine: shared GPU labels, whole GPUs beside them,
windows in the future, spot, release, extension, replacement and preemption; then a stateful
hypothesis machine that mixes fractions with whole slices and gangs."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from neocloud.kernel.errors import Conflict
from neocloud.placement import (
    Booking,
    BookingClass,
    GangRequest,
    NoCapacity,
    Placement,
    PlacementEngine,
    Preemption,
    Replacement,
    SliceRequest,
)
from neocloud.placement.calendar import NodeCalendar
from neocloud.placement.index import CapacityIndex

from .builders import grid_fleet

SPOT = BookingClass.spot
RESERVED = BookingClass.reserved


def one_node(gpus: int = 2, policy: str = "default") -> PlacementEngine:
    return PlacementEngine(grid_fleet(1, 1, 1, 1, gpus=gpus), policy=policy)


def placed(result: object) -> Placement:
    assert isinstance(result, Placement), result
    return result


def frac(milli: int, **kw: object) -> SliceRequest:
    return SliceRequest(milli_gpu=milli, **kw)  # type: ignore[arg-type]


def over_committed(cal: NodeCalendar) -> list[str]:
    """Every instant at which ``cal`` breaks a limit, checked booking by booking (independent
    of the engine's sweep): whole GPUs plus shared GPUs in use, milli-GPU per shared GPU,
    vCPU and RAM."""
    problems = []
    bookings = list(cal)
    for t in sorted({b.start for b in bookings}):
        live = [b for b in bookings if b.start <= t and (b.end is None or t < b.end)]
        labels: dict[int | None, int] = {}
        for b in live:
            if b.milli_gpu:
                labels[b.gpu_index] = labels.get(b.gpu_index, 0) + b.milli_gpu
        gpus = sum(b.gpus for b in live) + len(labels)
        if gpus > cal.capacity.gpus:
            problems.append(f"t={t}: {gpus} GPUs of {cal.capacity.gpus}")
        for label, milli in labels.items():
            if milli > 1000 or label is None or not 0 <= label < cal.capacity.gpus:
                problems.append(f"t={t}: GPU {label} holds {milli} milli")
        if sum(b.vcpus for b in live) > cal.capacity.vcpus:
            problems.append(f"t={t}: vCPU")
        if sum(b.ram_gib for b in live) > cal.capacity.ram_gib:
            problems.append(f"t={t}: RAM")
    return problems


def test_fractions_pack_onto_one_gpu_before_opening_another() -> None:
    e = one_node(gpus=2)
    labels = [placed(e.place(frac(250), now=0)).bookings[0].gpu_index for _ in range(4)]
    assert labels == [0, 0, 0, 0]
    assert placed(e.place(frac(250), now=0)).bookings[0].gpu_index == 1
    node = e.calendar.nodes["n-0-0-0-0"]
    assert node.free_ahead().gpus == 0  # both GPUs are shared now
    assert isinstance(e.place(SliceRequest(gpus=1), now=0), NoCapacity)
    assert e.index.room["n-0-0-0-0"] == 750


def test_whole_gpus_and_shared_gpus_never_exceed_the_node() -> None:
    e = one_node(gpus=2)
    a = placed(e.place(frac(300), now=0))
    assert isinstance(e.place(SliceRequest(gpus=2), now=0), NoCapacity)
    placed(e.place(SliceRequest(gpus=1), now=0))
    no = e.place(frac(800), now=0)  # GPU 0 has 700 left and no GPU is free for a new one
    assert isinstance(no, NoCapacity)
    assert no.details["milli_gpu"] == 800
    b = placed(e.place(frac(700), now=0))
    assert b.bookings[0].gpu_index == a.bookings[0].gpu_index
    assert over_committed(e.calendar.nodes["n-0-0-0-0"]) == []


def test_a_fraction_takes_its_gpu_only_while_it_runs() -> None:
    e = one_node(gpus=1)
    placed(e.place(frac(600, end=10, cls=RESERVED), now=0))
    # a whole GPU right after the fraction ends fits; overlapping it does not
    assert isinstance(
        e.place(SliceRequest(gpus=1, start=5, end=15, cls=RESERVED), now=0), NoCapacity
    )
    placed(e.place(SliceRequest(gpus=1, start=10, end=20, cls=RESERVED), now=0))
    # a later fraction shares nothing with the first (different times) and needs a free GPU
    assert isinstance(e.place(frac(600, start=12, end=30, cls=RESERVED), now=0), NoCapacity)
    later = placed(e.place(frac(600, start=20, end=30, cls=RESERVED), now=0))
    assert later.bookings[0].gpu_index == 0
    # two fractions of 600 never run on one GPU at once
    no = e.place(frac(600, start=25, end=28, cls=RESERVED), now=0)
    assert isinstance(no, NoCapacity)
    assert no.earliest_start == 30.0
    placed(e.place(frac(400, start=25, end=28, cls=RESERVED), now=0))
    assert over_committed(e.calendar.nodes["n-0-0-0-0"]) == []


def test_release_and_expiry_restore_the_index_exactly() -> None:
    e = PlacementEngine(grid_fleet(1, 2, 1, 2, gpus=2))
    before = e.index.snapshot()
    ps = [placed(e.place(frac(m, end=50), now=0)) for m in (100, 900, 450, 450, 999)]
    assert e.index.snapshot() != before
    for p in ps[:3]:
        e.release(p.allocation_id, now=1)
    e.advance(50)  # the rest end
    assert e.index.snapshot() == before


def test_spot_fraction_ends_where_a_reservation_starts() -> None:
    e = one_node(gpus=1)
    s = placed(e.place(frac(500, cls=SPOT), now=0))
    assert s.bookings[0].end is None
    r = placed(e.place(SliceRequest(gpus=1, start=100, end=200, cls=RESERVED), now=0))
    assert [t.id for t in r.truncated] == [s.bookings[0].id]
    assert e.calendar.by_id[s.bookings[0].id].end == 100
    # a new spot fraction beside it ends there too
    s2 = placed(e.place(frac(500, cls=SPOT), now=1))
    assert s2.bookings[0].end == 100
    assert over_committed(e.calendar.nodes["n-0-0-0-0"]) == []


def test_extending_a_fraction_checks_its_gpu_in_the_extra_time() -> None:
    e = one_node(gpus=1)
    a = placed(e.place(frac(600, end=10, cls=RESERVED), now=0))
    placed(e.place(frac(600, start=20, end=30, cls=RESERVED), now=0))
    placed(e.place(frac(300, start=20, end=30, cls=RESERVED), now=0))
    blocked = e.extend(a.allocation_id, 25, now=0)
    assert isinstance(blocked, NoCapacity)
    assert blocked.code == "extension_blocked"
    assert e.calendar.by_id[a.bookings[0].id].end == 10  # nothing moved
    placed(e.extend(a.allocation_id, 20, now=0))
    assert over_committed(e.calendar.nodes["n-0-0-0-0"]) == []


def test_a_failed_node_s_fraction_moves_to_a_shared_gpu_elsewhere() -> None:
    e = PlacementEngine(grid_fleet(1, 1, 1, 2, gpus=1))
    a = placed(e.place(frac(400, end=100, cls=RESERVED), now=0))
    b = placed(e.place(SliceRequest(milli_gpu=500, end=100, cls=RESERVED, gpu_model="H100"), now=0))
    assert a.node_ids == b.node_ids
    failed = a.node_ids[0]
    e.fail_node(failed, now=5)
    rep = e.replace(a.allocation_id, failed, now=5)
    assert isinstance(rep, Replacement)
    assert rep.booking.node_id != failed
    assert rep.booking.milli_gpu == 400
    assert rep.booking.gpu_index == 0
    assert rep.booking.start == 5
    assert rep.booking.end == 100
    for cal in e.calendar.nodes.values():
        assert over_committed(cal) == []


def test_preemption_evicts_spot_fractions_for_a_firm_fraction() -> None:
    e = one_node(gpus=1)
    low = placed(e.place(frac(700, cls=SPOT, priority=0), now=0))
    plan = e.preempt(frac(500, priority=1), now=10)
    assert isinstance(plan, Preemption)
    assert [v.id for v in plan.victims] == [low.bookings[0].id]
    assert plan.gpu_hours_lost == pytest.approx(0.7 * 10 / 3600)
    p = placed(e.place(frac(500, priority=1), now=10, allow_preemption=True))
    assert [v.id for v in p.preempted] == [low.bookings[0].id]


def test_loading_fractions_picks_a_gpu_and_refuses_an_over_commit() -> None:
    e = one_node(gpus=1)
    args = ("n-0-0-0-0", 0.0, None, RESERVED, "o", 0, 0, 4, 8)
    e.add_booking(Booking("x", *args, milli_gpu=600))
    assert e.calendar.by_id["x"].gpu_index == 0
    with pytest.raises(Conflict):
        e.add_booking(Booking("y", *args, milli_gpu=500))
    with pytest.raises(Conflict):
        e.add_booking(Booking("z", *args, milli_gpu=100, gpu_index=1))
    e.add_booking(Booking("w", *args, milli_gpu=400, gpu_index=0))
    assert over_committed(e.calendar.nodes["n-0-0-0-0"]) == []


MILLIS = st.sampled_from([100, 250, 300, 500, 600, 750, 999])


class FractionMachine(RuleBasedStateMachine):
    """Random fractions, whole slices and gangs over time on 4 nodes of 2 GPUs."""

    @initialize(policy=st.sampled_from(["default", "best_fit", "first_fit", "random"]))
    def build(self, policy: str) -> None:
        self.engine = PlacementEngine(grid_fleet(1, 2, 1, 2, gpus=2), policy=policy)
        self.now = 0.0

    def _window(
        self, cls: BookingClass, delay: int, length: int | None
    ) -> tuple[float, float | None]:
        start = self.now if cls is SPOT else self.now + delay
        return (start, None if length is None else start + length)

    @rule(
        milli=MILLIS,
        vcpus=st.integers(0, 20),
        cls=st.sampled_from(list(BookingClass)),
        delay=st.integers(0, 30),
        length=st.one_of(st.none(), st.integers(1, 60)),
        preempt=st.booleans(),
    )
    def place_fraction(
        self, milli: int, vcpus: int, cls: BookingClass, delay: int, length: int | None,
        preempt: bool,
    ) -> None:  # fmt: skip
        start, end = self._window(cls, delay, length)
        req = frac(milli, vcpus=vcpus, start=start, end=end, cls=cls, priority=1)
        before = len(self.engine.calendar.by_id)
        result = self.engine.place(req, now=self.now, allow_preemption=preempt)
        if isinstance(result, NoCapacity):
            assert len(self.engine.calendar.by_id) == before
        else:
            (b,) = result.bookings
            assert b.milli_gpu == milli
            assert b.gpus == 0
            assert b.gpu_index in (0, 1)

    @rule(
        gpus=st.integers(0, 2),
        cls=st.sampled_from(list(BookingClass)),
        delay=st.integers(0, 30),
        length=st.one_of(st.none(), st.integers(1, 60)),
    )
    def place_whole(self, gpus: int, cls: BookingClass, delay: int, length: int | None) -> None:
        start, end = self._window(cls, delay, length)
        self.engine.place(SliceRequest(gpus=gpus, start=start, end=end, cls=cls), now=self.now)

    @rule(n=st.integers(1, 3), delay=st.integers(0, 30), length=st.integers(1, 60))
    def place_gang(self, n: int, delay: int, length: int) -> None:
        start = self.now + delay
        req = GangRequest("H100", n, start=start, end=start + length, cls=RESERVED)
        self.engine.place(req, now=self.now)

    @rule(milli=MILLIS, length=st.one_of(st.none(), st.integers(1, 40)))
    def place_then_release_restores(self, milli: int, length: int | None) -> None:
        e = self.engine
        before = e.index.snapshot()
        end = None if length is None else self.now + length
        result = e.place(frac(milli, end=end), now=self.now)
        if isinstance(result, Placement):
            e.release(result.allocation_id, now=self.now)
        assert e.index.snapshot() == before

    @rule(milli=MILLIS, length=st.one_of(st.none(), st.integers(1, 40)))
    def earliest_start_is_feasible(self, milli: int, length: int | None) -> None:
        e = self.engine
        end = None if length is None else self.now + length
        result = e.place(frac(milli, end=end, cls=RESERVED), now=self.now, dry_run=True)
        if isinstance(result, NoCapacity) and result.earliest_start is not None:
            t = result.earliest_start
            later = frac(milli, start=t, end=None if length is None else t + length, cls=RESERVED)
            assert isinstance(e.place(later, now=self.now, dry_run=True), Placement)

    @rule(data=st.data(), more=st.integers(1, 60))
    def extend_one(self, data: st.DataObject, more: int) -> None:
        e = self.engine
        finite = sorted(
            a for a, alloc in e.allocations.items()
            if all(e.calendar.by_id[b].end is not None for b in alloc.booking_ids)
        )  # fmt: skip
        if finite:
            alloc_id = data.draw(st.sampled_from(finite))
            end = max(b.end or 0.0 for b in e.allocation(alloc_id)) + more
            e.extend(alloc_id, end, now=self.now)

    @rule(data=st.data())
    def release_one(self, data: st.DataObject) -> None:
        allocs = sorted(self.engine.allocations)
        if allocs:
            self.engine.release(data.draw(st.sampled_from(allocs)), now=self.now)

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
        if data.draw(st.booleans()):
            e.restore_node(node, now=self.now)

    @invariant()
    def never_over_committed(self) -> None:
        for cal in self.engine.calendar.nodes.values():
            assert over_committed(cal) == []

    @invariant()
    def index_matches_a_rebuild(self) -> None:
        e = self.engine
        fresh = CapacityIndex(e.topology, e.nodes)
        for node_id in e.nodes:
            fresh.update(node_id, e.calendar.nodes[node_id], e.eligible[node_id], e.now)
        assert fresh.snapshot() == e.index.snapshot()


FractionMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_fraction_machine = FractionMachine.TestCase
