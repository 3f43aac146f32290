"""Single-node slices of whole GPUs (with vCPU and RAM): which node, and why not.

Fractional GPUs (milli-GPU) are the shared-GPU placer's (``neocloud.placement.slices``); the
seam is ``place_slice`` refusing them with a precise code until it is wired in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from neocloud.kernel.errors import InvalidRequest
from neocloud.placement.gangs import domains_used
from neocloud.placement.model import Booking, NoCapacity, Placement, Resources, SliceRequest

if TYPE_CHECKING:
    from neocloud.placement.engine import PlacementEngine, _Window

EARLIEST_PROBES = 16  # nodes tried, soonest free first, for an earliest start


def place_slice(e: PlacementEngine, r: SliceRequest, *, dry_run: bool) -> Placement | NoCapacity:
    """Book ``r`` on one node chosen by the engine's policy, or say why not and when."""
    if r.milli_gpu:
        raise InvalidRequest(
            "fractional GPU slices are placed by the shared-GPU placer, not wired here yet",
            code="fractional_not_supported",
            param="milli_gpu",
        )
    if r.gpus < 0 or r.vcpus < 0 or r.ram_gib < 0:
        raise InvalidRequest("a slice asks for non-negative resources", param="gpus")
    w = e._window(r, e.now)
    demand = Resources(r.gpus, r.vcpus, r.ram_gib)
    models = [r.gpu_model] if r.gpu_model is not None else list(e.index.models)
    node_id = None
    for model in models:
        node_id = pick_slice_node(e, model, demand, w)
        if node_id is not None:
            break
    if node_id is None:
        return _no_capacity(e, r, demand, w, models)
    cal = e.calendar.nodes[node_id]
    end = w.end if w.firm else e._spot_end(cal, w)
    alloc_id = e._new_id(r.id)
    b = Booking(
        f"{alloc_id}:0", node_id, w.start, end, r.cls, r.owner, r.priority,
        demand.gpus, demand.vcpus, demand.ram_gib, alloc_id,
    )  # fmt: skip
    truncated = e._commit([b], r, w, dry_run)
    node = e.nodes[node_id]
    used = domains_used(e.topology, [node])
    return Placement(alloc_id, (b,), w.start, w.end, node.path[0], used, truncated)


def pick_slice_node(e: PlacementEngine, model: str, demand: Resources, w: _Window) -> str | None:
    """The node the policy picks among those with enough whole GPUs free from now on; for a
    window that could fit a gap, then a calendar check of the model's busy and spot nodes."""
    mi = e.index.models.get(model)
    if mi is None or demand.gpus >= len(mi.buckets):
        return None

    def fits(node_id: str) -> bool:
        return e._node_fits(node_id, demand, w)

    def idle_nodes() -> Iterable[str]:
        return e.index.idle_compact_first(model)

    node = e.policy.pick_slice_node(mi, demand.gpus, fits, idle_nodes)
    if node is not None or (w.firm and not w.future and w.end is None):
        return node
    for leaf_sets in (mi.spot, mi.busy):  # slow path
        for nodes in leaf_sets.values():
            for n in nodes:
                if fits(n):
                    return n
    return None


def _no_capacity(
    e: PlacementEngine, r: SliceRequest, demand: Resources, w: _Window, models: list[str]
) -> NoCapacity:
    most = 0
    earliest: float | None = None
    limit = e.now + e.horizon
    length = None if w.end is None else w.end - w.start
    for model in models:
        mi = e.index.models.get(model)
        if mi is None:
            continue
        most = max([most] + [k for k, b in enumerate(mi.buckets) if b])
        if not w.firm:
            continue
        soonest = sorted(x for lst in mi.release[0].values() for x in lst[:EARLIEST_PROBES])
        for until, node_id in soonest[:EARLIEST_PROBES]:
            t = max(until, w.start)
            if t > limit or (earliest is not None and t >= earliest):
                break
            probe = replace(w, start=t, end=None if length is None else t + length)
            if e._node_fits(node_id, demand, probe):
                earliest = t
                break
    return NoCapacity(
        f"no node has {demand.gpus} GPUs, {demand.vcpus} vCPUs and {demand.ram_gib} GiB free"
        f" (most whole GPUs free on a node from now on: {most})",
        details={
            "gpus": demand.gpus,
            "vcpus": demand.vcpus,
            "ram_gib": demand.ram_gib,
            "gpu_model": r.gpu_model,
            "max_free_gpus": most,
        },
        earliest_start=earliest,
    )
