"""Table-driven unit tests of ``FleetState``, the snapshot every placement decision shares:
windows, ``node_fits``, the ``add``/``remove``/``commit`` round trips and the index kept in step."""

from __future__ import annotations

import pytest

from neocloud.kernel.errors import Conflict, InvalidRequest
from neocloud.placement import (
    DEFAULT_LEVELS,
    Booking,
    BookingClass,
    GangRequest,
    Resources,
    SliceRequest,
    get_policy,
)
from neocloud.placement.index import BUSY, IDLE, SPOT
from neocloud.placement.state import FleetState, Window

from .builders import grid_fleet

SPOT_CLS = BookingClass.spot
ON_DEMAND = BookingClass.on_demand
RESERVED = BookingClass.reserved
NODE = "n-0-0-0-0"  # 8 GPUs, 128 vCPUs, 1,024 GiB


def state(fabrics: int = 2, blocks: int = 2, racks: int = 2, nodes: int = 2) -> FleetState:
    return FleetState(
        grid_fleet(fabrics, blocks, racks, nodes),
        levels=DEFAULT_LEVELS,
        policy=get_policy("default"),
        horizon=86_400.0,
    )


def booking(
    bid: str,
    start: float,
    end: float | None,
    cls: BookingClass = ON_DEMAND,
    *,
    gpus: int = 0,
    node: str = NODE,
    alloc: str = "",
    milli: int = 0,
    label: int | None = None,
) -> Booking:
    return Booking(bid, node, start, end, cls, "acme", 0, gpus, 0, 0, alloc or bid, milli, label)


def category(s: FleetState, node_id: str) -> int | None:
    st = s.index.state[node_id]
    return None if st is None else st[0]


# -- window ---------------------------------------------------------------------------------

WINDOWS = [
    # request start, end, class, now -> start, end, firm, future
    ("no start: now", None, None, ON_DEMAND, 10.0, (10.0, None, True, False)),
    ("a start in the past: now", 5.0, 50.0, ON_DEMAND, 10.0, (10.0, 50.0, True, False)),
    ("a later start: future", 20.0, 50.0, RESERVED, 10.0, (20.0, 50.0, True, True)),
    ("spot now", None, 50.0, SPOT_CLS, 10.0, (10.0, 50.0, False, False)),
]


@pytest.mark.parametrize(
    ("start", "end", "cls", "now", "expected"),
    [row[1:] for row in WINDOWS],
    ids=[row[0] for row in WINDOWS],
)
def test_window(
    start: float | None,
    end: float | None,
    cls: BookingClass,
    now: float,
    expected: tuple[float, float | None, bool, bool],
) -> None:
    w = state().window(SliceRequest(start=start, end=end, cls=cls), now)
    assert (w.start, w.end, w.firm, w.future) == expected
    assert w.now == now
    assert w.cls is cls


BAD_WINDOWS = [
    ("ends before it starts", 30.0, 20.0, ON_DEMAND, 10.0, "end"),
    ("ends when it starts", None, 10.0, ON_DEMAND, 10.0, "end"),
    ("ends before now", None, 5.0, ON_DEMAND, 10.0, "end"),
    ("spot booked ahead", 20.0, None, SPOT_CLS, 10.0, "start"),
]


@pytest.mark.parametrize(
    ("start", "end", "cls", "now", "param"),
    [row[1:] for row in BAD_WINDOWS],
    ids=[row[0] for row in BAD_WINDOWS],
)
def test_window_refuses(
    start: float | None, end: float | None, cls: BookingClass, now: float, param: str
) -> None:
    with pytest.raises(InvalidRequest) as exc:
        state().window(GangRequest("H100", 1, start=start, end=end, cls=cls), now)
    assert exc.value.param == param


# -- node_fits ------------------------------------------------------------------------------

# On one 8-GPU node at now=10: on-demand 4 GPUs [0, 100), spot 2 GPUs [0, 200), reserved
# whole node [200, 300).
FITS = [
    ("now: firm and spot both count, 2 of 2 free", ON_DEMAND, 10.0, 100.0, 2, True),
    ("now: spot counts, 3 > 2 free", ON_DEMAND, 10.0, 100.0, 3, False),
    ("future firm window ignores spot", RESERVED, 100.0, 200.0, 6, True),
    ("future firm window still meets the reservation", RESERVED, 100.0, 250.0, 1, False),
    ("open-ended future window meets the reservation", RESERVED, 100.0, None, 1, False),
    ("future window after the reservation: all free", RESERVED, 300.0, 400.0, 8, True),
    ("spot ends at the next firm start (200), 2 free", SPOT_CLS, 10.0, None, 2, True),
    ("spot: 3 > 2 free before the reservation", SPOT_CLS, 10.0, None, 3, False),
]


@pytest.mark.parametrize(
    ("cls", "start", "end", "gpus", "fits"),
    [row[1:] for row in FITS],
    ids=[row[0] for row in FITS],
)
def test_node_fits(
    cls: BookingClass, start: float, end: float | None, gpus: int, fits: bool
) -> None:
    s = state(fabrics=1, blocks=1, racks=1, nodes=1)
    s.add_booking(booking("a", 0, 100, gpus=4))
    s.add_booking(booking("spot", 0, 200, SPOT_CLS, gpus=2))
    s.add_booking(booking("r", 200, 300, RESERVED, gpus=8))
    s.advance(10)
    w = Window(start, end, s.now, cls)
    assert s.node_fits(NODE, Resources(gpus), w) is fits


SPOT_ENDS = [
    ("no firm booking ahead: the window's end", None, 50.0, 50.0),
    ("no firm booking ahead, open-ended", None, None, None),
    ("a firm booking ahead: its start", 40.0, None, 40.0),
    ("a firm booking after the window's end: the end", 80.0, 50.0, 50.0),
    ("a firm booking before the window's end: its start", 40.0, 50.0, 40.0),
]


@pytest.mark.parametrize(
    ("firm_at", "end", "expected"),
    [row[1:] for row in SPOT_ENDS],
    ids=[row[0] for row in SPOT_ENDS],
)
def test_spot_end(firm_at: float | None, end: float | None, expected: float | None) -> None:
    s = state(fabrics=1, blocks=1, racks=1, nodes=1)
    if firm_at is not None:
        s.add_booking(booking("r", firm_at, firm_at + 10, RESERVED, gpus=8))
    w = Window(10.0, end, 10.0, SPOT_CLS)
    assert s.spot_end(s.calendar.nodes[NODE], w) == expected


# -- add / remove ---------------------------------------------------------------------------

ROUND_TRIPS = [
    ("a whole node", [booking("a", 0, 100, gpus=8)], BUSY),
    ("a slice", [booking("a", 0, None, gpus=2)], BUSY),
    ("a fraction", [booking("a", 0, 100, milli=250, label=0)], BUSY),
    ("spot only", [booking("a", 0, None, SPOT_CLS, gpus=8)], SPOT),
    (
        "two bookings of one gang",
        [
            booking("g:0", 0, 100, gpus=8, alloc="g"),
            booking("g:1", 0, 100, gpus=8, alloc="g", node="n-0-0-0-1"),
        ],
        BUSY,
    ),
]


@pytest.mark.parametrize(
    ("bookings", "cat"), [row[1:] for row in ROUND_TRIPS], ids=[row[0] for row in ROUND_TRIPS]
)
def test_add_then_remove_restores_the_index(bookings: list[Booking], cat: int) -> None:
    s = state(fabrics=1, blocks=1, racks=1, nodes=2)
    before = s.index.snapshot()
    for b in bookings:
        s.add(b)
    assert {category(s, b.node_id) for b in bookings} == {cat}
    assert s.index.snapshot() != before
    allocs = {b.allocation_id for b in bookings}
    assert set(s.allocations) == allocs
    for a in allocs:
        assert s.allocation(a) == [b for b in bookings if b.allocation_id == a]
    removed = [s.remove(b.id) for b in bookings]
    assert removed == bookings
    assert s.allocations == {}
    assert s.calendar.by_id == {}
    assert s.index.snapshot() == before


def test_an_allocation_stays_while_it_holds_a_booking() -> None:
    s = state(fabrics=1, blocks=1, racks=1, nodes=2)
    s.add(booking("g:0", 0, None, gpus=8, alloc="g"), GangRequest("H100", 2, id="g"))
    s.add(booking("g:1", 0, None, gpus=8, alloc="g", node="n-0-0-0-1"))
    assert s.allocations["g"].booking_ids == ["g:0", "g:1"]
    assert isinstance(s.allocations["g"].request, GangRequest)  # the first add names it
    s.remove("g:0")
    assert s.allocations["g"].booking_ids == ["g:1"]
    s.remove("g:1")
    assert "g" not in s.allocations


def test_add_without_a_request_records_a_slice() -> None:
    s = state(fabrics=1, blocks=1, racks=1, nodes=1)
    s.add(booking("a", 0, None, gpus=1))
    assert s.allocations["a"].request == SliceRequest(id="a")


def test_advance_removes_what_ended_and_never_goes_back() -> None:
    s = state(fabrics=1, blocks=1, racks=1, nodes=1)
    s.add(booking("a", 0, 50, gpus=8))
    s.add(booking("b", 0, 100, gpus=0))
    assert [b.id for b in s.advance(50)] == ["a"]  # half-open: gone at its end
    assert s.advance(20) == []
    assert s.now == 50
    assert [b.id for b in s.advance(100)] == ["b"]
    assert category(s, NODE) == IDLE


# -- commit ---------------------------------------------------------------------------------

COMMITS = [
    # spot in place, the new booking, its class -> the truncated spot (as committed)
    ("firm now: spot is not truncated", 2, booking("x", 10, 50, gpus=6), ON_DEMAND, ()),
    ("future firm, room beside spot: spot stays", 2, booking("x", 20, 50, RESERVED, gpus=6),
     RESERVED, ()),
    ("future firm in spot's way: spot ends at its start", 4,
     booking("x", 20, 50, RESERVED, gpus=6), RESERVED, (booking("spot", 0, 20, SPOT_CLS, gpus=4),)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("spot_gpus", "new", "cls", "truncated"),
    [row[1:] for row in COMMITS],
    ids=[row[0] for row in COMMITS],
)
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry run", "commit"])
def test_commit(
    spot_gpus: int,
    new: Booking,
    cls: BookingClass,
    truncated: tuple[Booking, ...],
    dry_run: bool,
) -> None:
    s = state(fabrics=1, blocks=1, racks=1, nodes=1)
    spot = booking("spot", 0, None, SPOT_CLS, gpus=spot_gpus)
    s.add(spot)
    s.advance(10)
    before = s.index.snapshot()
    request = SliceRequest(id="x", gpus=new.gpus, start=new.start, end=new.end, cls=cls)
    w = s.window(request, s.now)
    assert s.commit([new], request, w, dry_run) == truncated
    if dry_run:
        assert s.index.snapshot() == before
        assert s.calendar.by_id == {"spot": spot}
        assert "x" not in s.allocations
        return
    expected_spot = truncated[0] if truncated else spot
    assert s.calendar.by_id == {"spot": expected_spot, "x": new}
    assert s.allocations["x"].request == request
    assert s.remove("x") == new  # the round trip: what commit added comes back out
    if not truncated:
        assert s.index.snapshot() == before


# -- ids, eligibility, released nodes ------------------------------------------------------


def test_new_id() -> None:
    s = state(fabrics=1, blocks=1, racks=1, nodes=1)
    assert s.new_id("mine") == "mine"
    s.add(booking("alloc-2:0", 0, None, gpus=1, alloc="alloc-2"))
    assert [s.new_id(""), s.new_id("")] == ["alloc-1", "alloc-3"]  # alloc-2 is taken
    with pytest.raises(Conflict):
        s.new_id("alloc-2")


def test_set_eligible_moves_the_node_out_of_the_index_and_back() -> None:
    s = state(fabrics=1, blocks=1, racks=1, nodes=1)
    s.set_eligible(NODE, False)
    assert category(s, NODE) is None
    assert s.index.models["H100"].counts[0]["reg"] == [0, 0, 0]
    s.set_eligible(NODE, True)
    assert category(s, NODE) == IDLE
    assert s.index.models["H100"].counts[0]["reg"] == [1, 0, 0]


RELEASED = [
    # window class, start -> busy nodes free of firm bookings by then
    ("now: none (the fast path reads idle nodes)", ON_DEMAND, 10.0, []),
    ("future, before any frees", RESERVED, 40.0, []),
    ("future, after the first frees", RESERVED, 50.0, ["n-0-0-0-0"]),
    ("future, after both free", RESERVED, 90.0, ["n-0-0-0-0", "n-0-0-0-1"]),
    ("spot: never", SPOT_CLS, 10.0, []),
]


@pytest.mark.parametrize(
    ("cls", "start", "expected"), [row[1:] for row in RELEASED], ids=[row[0] for row in RELEASED]
)
def test_released(cls: BookingClass, start: float, expected: list[str]) -> None:
    s = state(fabrics=1, blocks=1, racks=1, nodes=3)
    s.add(booking("a", 0, 50, gpus=8))
    s.add(booking("b", 0, 80, gpus=8, node="n-0-0-0-1"))
    s.advance(10)
    w = Window(start, None, s.now, cls)
    assert s.released("H100", 0, "reg", w) == expected
    assert s.released("A100", 0, "reg", w) == []


FAST_CATS = [
    ("firm now: idle nodes only", ON_DEMAND, 10.0, (IDLE,)),
    ("firm future: spot-only nodes too (their spot ends when it starts)", RESERVED, 20.0,
     (IDLE, SPOT)),
    ("spot now: idle nodes only", SPOT_CLS, 10.0, (IDLE,)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("cls", "start", "expected"), [row[1:] for row in FAST_CATS], ids=[row[0] for row in FAST_CATS]
)
def test_fast_cats(cls: BookingClass, start: float, expected: tuple[int, ...]) -> None:
    assert state().fast_cats(Window(start, None, 10.0, cls)) == expected
