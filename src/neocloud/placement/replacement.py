"""Replacing a failed node of an allocation, as close to it as the fleet allows."""

from __future__ import annotations

from dataclasses import replace

from neocloud.kernel.errors import NotFound
from neocloud.placement.gangs import GangShape, domain_chooser
from neocloud.placement.model import GangRequest, NoCapacity, Replacement, Resources
from neocloud.placement.single_node import pick_fraction_node, pick_slice_node
from neocloud.placement.state import FleetState


def find_replacement(
    state: FleetState, allocation_id: str, failed_node_id: str, *, dry_run: bool
) -> Replacement | NoCapacity:
    """Search the failed node's rack, then block, … up to the gang's required level (or only
    its segment's domain) for a substitute; book it for the rest of the failed booking."""
    old = next((b for b in state.allocation(allocation_id) if b.node_id == failed_node_id), None)
    if old is None:
        raise NotFound(
            f"allocation {allocation_id} has no booking on node {failed_node_id}",
            code="booking_not_found",
        )
    alloc = state.allocations[allocation_id]
    r = alloc.request
    node = state.nodes[failed_node_id]
    topo = state.topology
    top, bottom = 0, topo.depth - 1
    if isinstance(r, GangRequest):
        top = topo.level_index(r.required_level)
        if r.segment is not None:  # a segment must stay inside its domain
            top = topo.level_index(r.segment_level)
    members = {state.calendar.by_id[b].node_id for b in alloc.booking_ids}
    w = state.window(GangRequest(node.gpu_model, 1, end=old.end, cls=old.cls), state.now)
    w = replace(w, start=max(old.start, state.now))
    whole = old.resources == state.calendar.nodes[failed_node_id].capacity
    for level in range(bottom, top - 1, -1):
        domain = node.path[level]
        new_node = None
        label = old.gpu_index
        if whole:
            shape = GangShape(1, level, None, None, topo.depth - 1)
            probe = GangRequest(node.gpu_model, 1, required_level=topo.levels[level])
            choice = domain_chooser(state, probe, w, shape, domain, members).choose([domain])
            new_node = None if choice is None else choice[1][0]
        elif level == top and old.milli_gpu:  # a fraction: a shared GPU anywhere
            rest = Resources(0, old.vcpus, old.ram_gib)
            pick = pick_fraction_node(state, node.gpu_model, old.milli_gpu, rest, w)
            if pick is not None:
                new_node, label = pick
        elif level == top:  # a slice: any node of the model that has room
            new_node = pick_slice_node(state, node.gpu_model, old.resources, w)
        if new_node is None:
            continue
        cal = state.calendar.nodes[new_node]
        end = old.end if w.firm else state.spot_end(cal, w)
        b = replace(old, id=f"{old.id}~{new_node}", node_id=new_node, start=w.start, end=end,
                    gpu_index=label)  # fmt: skip
        if not dry_run:
            state.remove(old.id)
            state.commit([b], r, w, dry_run=False)
        return Replacement(allocation_id, failed_node_id, b, topo.levels[level], domain)
    level_name = topo.levels[top]
    return NoCapacity(
        f"no free {node.gpu_model} node in {level_name} {node.path[top]} to replace"
        f" {failed_node_id}",
        code="no_replacement",
        details={"level": level_name, "domain": node.path[top], "node_id": failed_node_id},
    )
