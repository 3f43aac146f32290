"""Whole-only nodes (bare metal, never shared): a single-node request lands on one only when it
asks for all of its GPUs; fractions never do; gangs use them as any node; the index never
counts them as room for a partial request and stays exact through place and release."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neocloud.placement import (
    GangRequest,
    NoCapacity,
    Placement,
    PlacementEngine,
    SliceRequest,
)
from neocloud.placement.model import BookingClass, NodeSnapshot

from .builders import grid_fleet

POLICIES = ["default", "best_fit", "first_fit", "random", "fgd"]


def fleet(whole: int, shared: int = 0, gpus: int = 8) -> list[NodeSnapshot]:
    nodes = grid_fleet(fabrics=1, blocks=2, racks=2, nodes=4, gpus=gpus)[: whole + shared]
    return [replace(n, whole_only=i < whole) for i, n in enumerate(nodes)]


def placed(r: Placement | NoCapacity) -> Placement:
    assert isinstance(r, Placement), r
    return r


def refused(r: Placement | NoCapacity) -> NoCapacity:
    assert isinstance(r, NoCapacity), r
    return r


@pytest.mark.parametrize("policy", POLICIES)
def test_a_partial_request_never_lands_on_a_whole_only_node(policy: str) -> None:
    e = PlacementEngine(fleet(whole=4), policy=policy)
    for gpus in (1, 2, 4, 7):
        no = refused(e.place(SliceRequest(gpus=gpus, gpu_model="H100"), now=0))
        assert no.details["whole_node_only_free"] == 4
        assert "whole-node requests only" in no.reason
    refused(e.place(SliceRequest(milli_gpu=500, gpu_model="H100"), now=0))
    refused(e.place(SliceRequest(gpus=0, vcpus=1, gpu_model="H100"), now=0))
    assert not e.calendar.by_id


@pytest.mark.parametrize("policy", POLICIES)
def test_a_whole_node_request_lands_on_one(policy: str) -> None:
    e = PlacementEngine(fleet(whole=2), policy=policy)
    a = placed(e.place(SliceRequest(gpus=8, gpu_model="H100"), now=0))
    b = placed(e.place(SliceRequest(gpus=8, gpu_model="H100"), now=0))
    assert {a.node_ids[0], b.node_ids[0]} == {n.id for n in fleet(whole=2)}
    refused(e.place(SliceRequest(gpus=8, gpu_model="H100"), now=0))
    e.release(a.allocation_id, now=1)
    assert placed(e.place(SliceRequest(gpus=8, gpu_model="H100"), now=1)).node_ids == a.node_ids


@pytest.mark.parametrize("policy", POLICIES)
def test_mixed_fleet_partial_goes_to_shared_whole_prefers_bare_metal(policy: str) -> None:
    nodes = fleet(whole=2, shared=2)
    metal = {n.id for n in nodes if n.whole_only}
    e = PlacementEngine(nodes, policy=policy)
    for _ in range(16):  # every GPU of the two shared nodes, one at a time
        p = placed(e.place(SliceRequest(gpus=1, gpu_model="H100"), now=0))
        assert p.node_ids[0] not in metal
    refused(e.place(SliceRequest(gpus=1, gpu_model="H100"), now=0))
    whole = placed(e.place(SliceRequest(gpus=8, gpu_model="H100"), now=0))
    assert whole.node_ids[0] in metal


def test_fractions_and_spot_stay_off_and_future_windows_respect_it() -> None:
    e = PlacementEngine(fleet(whole=1, shared=1))
    metal = fleet(whole=1)[0].id
    for _ in range(4):
        p = placed(e.place(SliceRequest(milli_gpu=500, gpu_model="H100"), now=0))
        assert p.node_ids[0] != metal
    spot = SliceRequest(gpus=2, gpu_model="H100", cls=BookingClass.spot)
    assert placed(e.place(spot, now=0)).node_ids[0] != metal
    future = SliceRequest(gpus=1, gpu_model="H100", start=100, end=200)
    assert placed(e.place(future, now=0)).node_ids[0] != metal
    # the shared node filled, a future partial request never goes to the bare-metal one
    for _ in range(8):
        e.place(SliceRequest(gpus=1, gpu_model="H100", start=100, end=200), now=0)
    r = e.place(SliceRequest(gpus=1, gpu_model="H100", start=100, end=200), now=0)
    assert isinstance(r, NoCapacity) or r.node_ids[0] != metal


def test_gangs_use_whole_only_nodes() -> None:
    e = PlacementEngine(fleet(whole=8, shared=0))
    g = placed(e.place(GangRequest("H100", 4), now=0))
    assert len(set(g.node_ids)) == 4


def test_preemption_never_plans_a_partial_request_on_bare_metal() -> None:
    nodes = fleet(whole=1, shared=0)
    e = PlacementEngine(nodes)
    spot = SliceRequest(gpus=8, gpu_model="H100", cls=BookingClass.spot)
    placed(e.place(spot, now=0))
    refused(e.place(SliceRequest(gpus=1, gpu_model="H100"), now=1, allow_preemption=True))
    p = placed(e.place(SliceRequest(gpus=8, gpu_model="H100"), now=1, allow_preemption=True))
    assert len(p.preempted) == 1


def test_the_index_keeps_whole_only_nodes_out_of_slice_buckets() -> None:
    e = PlacementEngine(fleet(whole=2, shared=1))
    mi = e.index.models["H100"]
    metal = {n.id for n in fleet(whole=2)}
    assert all(not (metal & set(b)) for b in mi.buckets)
    assert set(mi.whole[8]) == metal
    p = placed(e.place(SliceRequest(gpus=8, gpu_model="H100"), now=0))
    assert p.node_ids[0] in metal
    assert set(mi.whole[8]) == metal - {p.node_ids[0]}
    e.release(p.allocation_id, now=1)
    assert set(mi.whole[8]) == metal
    assert list(e.index.idle_compact_first("H100")) == [fleet(whole=2, shared=1)[2].id]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1, 2, 4, 8]), st.booleans()), max_size=30))
def test_index_after_places_and_releases_equals_a_fresh_one(ops: list[tuple[int, bool]]) -> None:
    """Whatever was placed and released, the index equals one rebuilt from the bookings, and no
    whole-only node ever holds a partial booking."""
    nodes = fleet(whole=3, shared=3)
    e = PlacementEngine(nodes)
    live: list[str] = []
    t = 0.0
    for gpus, release in ops:
        t += 1
        if release and live:
            e.release(live.pop(0), now=t)
            continue
        r = e.place(SliceRequest(gpus=gpus, gpu_model="H100"), now=t)
        if isinstance(r, Placement):
            live.append(r.allocation_id)
    whole_only = {n.id for n in nodes if n.whole_only}
    fresh = PlacementEngine(nodes)
    fresh.advance(t)
    for n in nodes:
        for b in e.bookings(n.id):
            if n.id in whole_only:
                assert b.gpus == n.gpu_count
            fresh.add_booking(b)
    assert e.index.snapshot() == fresh.index.snapshot()
