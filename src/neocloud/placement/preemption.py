"""Choosing spot bookings to evict: the cheapest set that makes a request start now.

Cost of a set of victims, compared in order: the highest priority among them, the GPU-hours of
work they lose (GPUs x time since their start), then how many they are. Only spot bookings are
victims, and a spot request may only evict spot of lower priority.
"""

from __future__ import annotations

from neocloud.placement.calendar import fraction_fits, peak_usage
from neocloud.placement.gangs import Avail, GangChooser, gang_shape, gang_view
from neocloud.placement.index import IDLE
from neocloud.placement.model import (
    Booking,
    GangRequest,
    NoCapacity,
    Preemption,
    Request,
    Resources,
    SliceRequest,
)
from neocloud.placement.state import FleetState

Cost = tuple[int, float, int]
NONE: Cost = (-(1 << 62), 0.0, 0)


def _lost(b: Booking, now: float) -> float:
    return (b.gpus + b.milli_gpu / 1000) * max(now - b.start, 0.0) / 3600.0


def _cost(victims: list[Booking], now: float) -> Cost:
    if not victims:
        return NONE
    return (max(v.priority for v in victims), sum(_lost(v, now) for v in victims), len(victims))


def _evictable(b: Booking, r: Request) -> bool:
    return b.cls.preemptible and (not r.cls.preemptible or b.priority < r.priority)


def plan_preemption(state: FleetState, r: Request) -> Preemption | NoCapacity:
    """What to evict so that ``r`` fits now; changes nothing."""
    w = state.window(r, state.now)
    if w.future:
        return NoCapacity(
            "a future window needs no preemption: spot in its way ends when it starts",
            code="nothing_to_preempt",
        )
    if isinstance(r, GangRequest):
        return _plan_gang(state, r)
    return _plan_slice(state, r)


def _plan_gang(state: FleetState, r: GangRequest) -> Preemption | NoCapacity:
    w = state.window(r, state.now)
    shape = gang_shape(state.topology, r)
    mi = state.index.models.get(r.gpu_model)
    if mi is None:
        return NoCapacity(f"no {r.gpu_model} nodes in the fleet", code="unknown_gpu_model")
    now = state.now
    chooser, cands = gang_view(state, r, w, shape)
    shape = chooser.shape
    if chooser.choose(cands) is not None:
        return Preemption((), 0.0, ())
    best: tuple[Cost, list[Booking], list[str]] | None = None
    for d in cands:
        costed: list[tuple[Cost, str, list[Booking]]] = []
        for leaf in state.topology.leaves_under(shape.required, d):
            for node_id in mi.spot.get(leaf, ()):
                bs = list(state.calendar.nodes[node_id])
                if all(_evictable(b, r) for b in bs):
                    costed.append((_cost(bs, now), node_id, bs))
        costed.sort(key=lambda c: (c[0], c[1]))
        idle = mi.counts[shape.required].get(d, [0, 0, 0])[IDLE]
        m = max(shape.need - idle, 0)
        for take in (costed[:m], costed):
            extra = [c[1] for c in take]
            ch = GangChooser(Avail(state.index, r.gpu_model, (IDLE,), extra), state.policy, shape)
            choice = ch.choose([d])
            if choice is None:
                continue
            chosen = set(choice[1])
            victims = [b for c in take if c[1] in chosen for b in c[2]]
            cost = _cost(victims, now)
            if best is None or cost < best[0]:
                best = (cost, victims, sorted(chosen))
            break
    if best is None:
        return NoCapacity(
            f"even evicting every spot booking, no {state.topology.levels[shape.required]}"
            f" can hold {shape.need} {r.gpu_model} nodes",
            code="no_capacity_even_with_preemption",
            details={"needed": shape.need, "gpu_model": r.gpu_model},
        )
    cost, victims, nodes = best
    return Preemption(tuple(victims), cost[1], tuple(nodes))


def _plan_slice(state: FleetState, r: SliceRequest) -> Preemption | NoCapacity:
    demand = Resources(0 if r.milli_gpu else r.gpus, r.vcpus, r.ram_gib)
    now = state.now
    models = [r.gpu_model] if r.gpu_model is not None else list(state.index.models)
    w = state.window(r, now)
    best: tuple[Cost, str, list[Booking]] | None = None
    for model in models:
        mi = state.index.models.get(model)
        if mi is None:
            continue
        for sets in (mi.idle, mi.spot, mi.busy):
            for nodes in sets.values():
                for node_id in nodes:
                    plan = _slice_on_node(state, node_id, demand, r, now, w.end)
                    if plan is not None and (best is None or plan[0] < best[0]):
                        best = (plan[0], node_id, plan[1])
                        if not plan[1]:
                            return Preemption((), 0.0, (node_id,))
    if best is None:
        return NoCapacity(
            f"even evicting spot, no node can take {r.milli_gpu or 1000 * demand.gpus}"
            f" milli-GPU, {demand.vcpus} vCPUs"
            f" and {demand.ram_gib} GiB",
            code="no_capacity_even_with_preemption",
        )
    cost, node_id, victims = best
    return Preemption(tuple(victims), cost[1], (node_id,))


def _slice_on_node(
    state: FleetState,
    node_id: str,
    demand: Resources,
    r: SliceRequest,
    now: float,
    end: float | None,
) -> tuple[Cost, list[Booking]] | None:
    cal = state.calendar.nodes[node_id]
    if not demand.fits_in(cal.capacity) or (r.milli_gpu and cal.capacity.gpus < 1):
        return None
    if not state.takes(node_id, demand.gpus, r.milli_gpu):  # bare metal: whole nodes only
        return None

    def fits(keep: list[Booking]) -> bool:
        if r.milli_gpu:
            return fraction_fits(keep, cal.capacity, r.milli_gpu, demand, now, end) is not None
        return (peak_usage(keep, now, end) + demand).fits_in(cal.capacity)

    keep = list(cal)
    victims: list[Booking] = []
    spots = sorted(
        (b for b in keep if _evictable(b, r)), key=lambda b: (b.priority, _lost(b, now), b.id)
    )
    while True:
        if fits(keep):
            return _cost(victims, now), victims
        if not spots:
            return None
        v = spots.pop(0)
        keep.remove(v)
        victims.append(v)
