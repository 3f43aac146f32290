"""Single-node slices: whole GPUs or a fraction of one GPU (with vCPU and RAM): which node,
and why not.

A fraction (``milli_gpu`` 1-999) goes on a shared GPU label of a node (see ``Booking``): first
a label that already has room from now on, the fullest that fits across the model's nodes
(read from the index's ``frac`` buckets), so fractions pack onto few GPUs; else a new label on
the node the policy picks for one whole GPU (the fullest node, blocks kept whole); for a window
that could fit a gap, then a calendar check of the model's busy and spot nodes. The calendar
checks every instant of the window, so a GPU's fractions never add up to more than 1,000
milli-GPU and whole GPUs plus shared GPUs in use never exceed the node's GPUs.

A whole-only node (bare metal) takes a slice only when it asks for all of the node's GPUs,
and never a fraction: the index keeps such nodes out of the slice buckets and lists the free
ones by size (``whole``), where a request of exactly that many GPUs looks first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from neocloud.kernel.errors import InvalidRequest
from neocloud.placement.calendar import MILLI
from neocloud.placement.gangs import domains_used
from neocloud.placement.model import Booking, NoCapacity, Placement, Resources, SliceRequest
from neocloud.placement.state import FleetState, Window

EARLIEST_PROBES = 16  # nodes tried, soonest free first, for an earliest start


def place_slice(state: FleetState, r: SliceRequest, *, dry_run: bool) -> Placement | NoCapacity:
    """Book ``r`` on one node chosen by the engine's policy, or say why not and when."""
    if r.milli_gpu:
        return _place_fraction(state, r, dry_run=dry_run)
    if r.gpus < 0 or r.vcpus < 0 or r.ram_gib < 0:
        raise InvalidRequest("a slice asks for non-negative resources", param="gpus")
    w = state.window(r, state.now)
    demand = Resources(r.gpus, r.vcpus, r.ram_gib)
    models = [r.gpu_model] if r.gpu_model is not None else list(state.index.models)
    node_id = None
    for model in models:
        node_id = pick_slice_node(state, model, demand, w)
        if node_id is not None:
            break
    if node_id is None:
        return _no_capacity(state, r, demand, w, models)
    cal = state.calendar.nodes[node_id]
    end = w.end if w.firm else state.spot_end(cal, w)
    alloc_id = state.new_id(r.id)
    b = Booking(
        f"{alloc_id}:0", node_id, w.start, end, r.cls, r.owner, r.priority,
        demand.gpus, demand.vcpus, demand.ram_gib, alloc_id,
    )  # fmt: skip
    truncated = state.commit([b], r, w, dry_run)
    node = state.nodes[node_id]
    used = domains_used(state.topology, [node])
    return Placement(alloc_id, (b,), w.start, w.end, node.path[0], used, truncated)


def pick_slice_node(state: FleetState, model: str, demand: Resources, w: Window) -> str | None:
    """The node the policy picks among those with enough whole GPUs free from now on; for a
    window that could fit a gap, then a calendar check of the model's busy and spot nodes."""
    mi = state.index.models.get(model)
    if mi is None or demand.gpus >= len(mi.buckets):
        return None

    def fits(node_id: str) -> bool:
        return state.node_fits(node_id, demand, w)

    def idle_nodes() -> Iterable[str]:
        return state.index.idle_compact_first(model)

    # whole-only nodes of exactly this size first: a whole-node request is what they are for
    for n in mi.whole.get(demand.gpus, ()) if demand.gpus else ():
        if fits(n):
            return n
    node = state.policy.pick_slice_node(mi, demand.gpus, fits, idle_nodes)
    if node is not None or (w.firm and not w.future and w.end is None):
        return node
    for leaf_sets in (mi.spot, mi.busy):  # slow path
        for nodes in leaf_sets.values():
            for n in nodes:
                if state.takes(n, demand.gpus) and fits(n):
                    return n
    return None


def _no_capacity(
    state: FleetState, r: SliceRequest, demand: Resources, w: Window, models: list[str]
) -> NoCapacity:
    most = 0
    whole_free = 0  # whole-only nodes free now that this request cannot take (not all GPUs)
    earliest: float | None = None
    limit = state.now + state.horizon
    length = None if w.end is None else w.end - w.start
    for model in models:
        mi = state.index.models.get(model)
        if mi is None:
            continue
        most = max([most] + [k for k, b in enumerate(mi.buckets) if b])
        whole_free += sum(len(ns) for g, ns in mi.whole.items() if g != demand.gpus)
        if not w.firm:
            continue
        soonest = sorted(x for lst in mi.release[0].values() for x in lst[:EARLIEST_PROBES])
        for until, node_id in soonest[:EARLIEST_PROBES]:
            t = max(until, w.start)
            if t > limit or (earliest is not None and t >= earliest):
                break
            probe = replace(w, start=t, end=None if length is None else t + length)
            if state.takes(node_id, demand.gpus) and state.node_fits(node_id, demand, probe):
                earliest = t
                break
    whole_note = (
        f"; {whole_free} free nodes take whole-node requests only (bare metal)"
        if whole_free
        else ""
    )
    return NoCapacity(
        f"no node has {demand.gpus} GPUs, {demand.vcpus} vCPUs and {demand.ram_gib} GiB free"
        f" (most whole GPUs free on a node from now on: {most}){whole_note}",
        details={
            "gpus": demand.gpus,
            "vcpus": demand.vcpus,
            "ram_gib": demand.ram_gib,
            "gpu_model": r.gpu_model,
            "max_free_gpus": most,
            "whole_node_only_free": whole_free,
        },
        earliest_start=earliest,
    )


def _place_fraction(state: FleetState, r: SliceRequest, *, dry_run: bool) -> Placement | NoCapacity:
    if not 0 < r.milli_gpu < MILLI or r.gpus:
        raise InvalidRequest(
            f"a fractional slice is 1-{MILLI - 1} milli-GPU of one GPU and no whole GPUs"
            f" (got {r.milli_gpu} milli-GPU and {r.gpus} GPUs); ask for whole GPUs with gpus",
            param="milli_gpu",
        )
    if r.vcpus < 0 or r.ram_gib < 0:
        raise InvalidRequest("a slice asks for non-negative resources", param="vcpus")
    w = state.window(r, state.now)
    rest = Resources(0, r.vcpus, r.ram_gib)
    models = [r.gpu_model] if r.gpu_model is not None else list(state.index.models)
    pick = None
    for model in models:
        pick = pick_fraction_node(state, model, r.milli_gpu, rest, w)
        if pick is not None:
            break
    if pick is None:
        return _fraction_no_capacity(state, r, rest, w, models)
    node_id, label = pick
    cal = state.calendar.nodes[node_id]
    end = w.end if w.firm else state.spot_end(cal, w)
    alloc_id = state.new_id(r.id)
    b = Booking(
        f"{alloc_id}:0", node_id, w.start, end, r.cls, r.owner, r.priority,
        0, r.vcpus, r.ram_gib, alloc_id, milli_gpu=r.milli_gpu, gpu_index=label,
    )  # fmt: skip
    truncated = state.commit([b], r, w, dry_run)
    node = state.nodes[node_id]
    used = domains_used(state.topology, [node])
    return Placement(alloc_id, (b,), w.start, w.end, node.path[0], used, truncated)


def fraction_label(
    state: FleetState, node_id: str, milli: int, rest: Resources, w: Window
) -> int | None:
    """The shared GPU label of ``node_id`` that takes the fraction in window ``w``, or None
    (never on a whole-only node)."""
    if not state.eligible[node_id] or state.nodes[node_id].whole_only:
        return None
    cal = state.calendar.nodes[node_id]
    if w.firm:
        return cal.fraction_gpu(milli, rest, w.start, w.end, ignore_spot=w.future)
    end = state.spot_end(cal, w)
    if end is not None and end <= w.start:
        return None
    return cal.fraction_gpu(milli, rest, w.start, end, ignore_spot=False)


def pick_fraction_node(
    state: FleetState, model: str, milli: int, rest: Resources, w: Window
) -> tuple[str, int] | None:
    """``(node, label)`` for a fraction: a shared GPU with room first (least room that
    fits), then a new shared GPU where the policy would put one whole GPU, then (for a
    window that could fit a gap) a calendar check of busy and spot nodes."""
    mi = state.index.models.get(model)
    if mi is None:
        return None
    for room in sorted(k for k in mi.frac if k >= milli):
        for node_id in mi.frac[room]:
            label = fraction_label(state, node_id, milli, rest, w)
            if label is not None:
                return node_id, label

    def fits(node_id: str) -> bool:
        return fraction_label(state, node_id, milli, rest, w) is not None

    def idle_nodes() -> Iterable[str]:
        return state.index.idle_compact_first(model)

    node = None
    if len(mi.buckets) > 1:
        node = state.policy.pick_slice_node(mi, 1, fits, idle_nodes)
    if node is None and not (w.firm and not w.future and w.end is None):
        node = next((n for sets in (mi.spot, mi.busy) for ns in sets.values() for n in ns
                     if fits(n)), None)  # fmt: skip
    if node is None:
        return None
    label = fraction_label(state, node, milli, rest, w)
    return None if label is None else (node, label)


def _fraction_no_capacity(
    state: FleetState, r: SliceRequest, rest: Resources, w: Window, models: list[str]
) -> NoCapacity:
    earliest: float | None = None
    limit = state.now + state.horizon
    length = None if w.end is None else w.end - w.start
    if w.firm:
        for model in models:
            mi = state.index.models.get(model)
            if mi is None:
                continue
            soonest = sorted(x for lst in mi.release[0].values() for x in lst[:EARLIEST_PROBES])
            for until, node_id in soonest[:EARLIEST_PROBES]:
                t = max(until, w.start)
                if t > limit or (earliest is not None and t >= earliest):
                    break
                probe = replace(w, start=t, end=None if length is None else t + length)
                if fraction_label(state, node_id, r.milli_gpu, rest, probe) is not None:
                    earliest = t
                    break
    return NoCapacity(
        f"no GPU has {r.milli_gpu} milli-GPU free on a node with {r.vcpus} vCPUs and"
        f" {r.ram_gib} GiB free",
        details={
            "milli_gpu": r.milli_gpu,
            "vcpus": r.vcpus,
            "ram_gib": r.ram_gib,
            "gpu_model": r.gpu_model,
        },
        earliest_start=earliest,
    )
