"""Placing a gang: its nodes (best fit in time for a fixed window, else fewest blocks), its
bookings, and when it does not fit, why and the earliest start that would."""

from __future__ import annotations

from dataclasses import replace

from neocloud.placement.gangs import (
    GangChooser,
    GangShape,
    domains_used,
    gang_domains,
    gang_shape,
    gang_view,
)
from neocloud.placement.index import IDLE, SPOT
from neocloud.placement.model import Booking, GangRequest, NoCapacity, Placement
from neocloud.placement.state import FleetState, Window
from neocloud.placement.timefit import time_fit_gang


def place_gang(s: FleetState, r: GangRequest, *, dry_run: bool) -> Placement | NoCapacity:
    """Book one whole node per gang member in one domain at the required level, from
    ``s.now``; or say why not and when it would fit."""
    w = s.window(r, s.now)
    shape = gang_shape(s.topology, r)
    if r.gpu_model not in s.index.models:
        return NoCapacity(
            f"no {r.gpu_model} nodes in the fleet",
            code="unknown_gpu_model",
            details={"gpu_model": r.gpu_model},
        )
    choice = None
    time_aware = getattr(s.policy, "time_aware", False)
    if time_aware and w.firm and w.end is not None and shape.segment is None:
        # a fixed window: best fit in time (segments keep the topology-aware choice)
        tshape, tcands = gang_domains(s.topology, r, shape)
        choice = time_fit_gang(s, r, w, tshape, tcands)
    if choice is None:
        chooser, cands = gang_view(s, r, w, shape)
        shape = chooser.shape
        choice = chooser.choose(cands)
        if choice is None:
            return _no_capacity(s, r, w, shape, chooser, cands)
    domain, node_ids = choice
    alloc_id = s.new_id(r.id)
    bookings = []
    for i, node_id in enumerate(node_ids):
        cal = s.calendar.nodes[node_id]
        end = w.end if w.firm else s.spot_end(cal, w)
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
    used = domains_used(s.topology, (s.nodes[n] for n in node_ids))
    truncated = s.commit(bookings, r, w, dry_run)
    return Placement(alloc_id, tuple(bookings), w.start, w.end, domain, used, truncated)


def _no_capacity(
    s: FleetState,
    r: GangRequest,
    w: Window,
    shape: GangShape,
    chooser: GangChooser,
    cands: list[str],
) -> NoCapacity:
    level = s.topology.levels[shape.required]
    best, avail = chooser.best_available(cands)
    earliest = _earliest_start(s, r, w, shape, cands)
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


def _earliest_start(
    s: FleetState, r: GangRequest, w: Window, shape: GangShape, cands: list[str]
) -> float | None:
    """Earliest start within the horizon when enough nodes in one domain are free of firm
    bookings (checked by a what-if placement at that start)."""
    mi = s.index.models.get(r.gpu_model)
    if mi is None or not w.firm:
        return None
    limit = s.now + s.horizon
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
        if t <= s.now:
            continue
        probe = replace(r, id="", start=t, end=None if duration is None else t + duration)
        pw = s.window(probe, s.now)
        chooser, pc = gang_view(s, probe, pw, shape, scan=False)
        if chooser.choose(pc) is not None:
            return t
    return None
