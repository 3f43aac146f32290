"""The waiting queue: requests that asked to wait for capacity, FIFO within a class, with
backfill that never delays the head.

A create with ``queue`` (or ``max_wait_s``) that does not fit stays ``pending`` until a later
cycle places it or its ``queue_until`` passes (then ``failed(no_capacity)``). Each cycle the
scheduler walks pending work reserved > on-demand > spot, oldest first; the first queued
request of a GPU model that does not fit is that model's *head*. Placement cannot know when
open-ended work ends, so "does not delay the head" is decided on capacity, not on time: the
head holds a *shadow* on the capacity nearest to fitting it (for a slice, the free GPUs of the
node with the most of them; for a gang, the idle nodes of the domain with the most of them).
Later requests of any class that come after the head in the order are placed around the
shadow, so capacity that frees up accrues to the head (it is first in the next cycle) and
nothing behind it can take what it is waiting for. A request that no node or domain of the
fleet could ever hold fails at once, queued or not.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from neocloud.placement import (
    Booking,
    BookingClass,
    GangRequest,
    NoCapacity,
    PlacementEngine,
    SliceRequest,
)
from neocloud.placement.model import Resources

SHADOW_OWNER = "queue"


def waits(queue_until: datetime | None, now: datetime) -> bool:
    """Whether a request that does not fit now keeps waiting."""
    return queue_until is not None and now < queue_until


def expired(queue_until: datetime | None, no: NoCapacity) -> NoCapacity:
    """The no-capacity answer for a request whose wait ran out (unchanged if it never
    waited)."""
    if queue_until is None:
        return no
    return NoCapacity(
        f"waited until {queue_until.isoformat()}: {no.reason}",
        code=no.code,
        details=no.details,
        earliest_start=no.earliest_start,
    )


def never_fits(engine: PlacementEngine, request: SliceRequest | GangRequest) -> str | None:
    """Why the request could not fit even on an empty fleet (all nodes, healthy or not), or
    None. Such a request fails at once even when queued."""
    model = request.gpu_model
    nodes = [n for n in engine.nodes.values() if n.gpu_model == model]
    if not nodes:
        return f"the fleet has no {model} nodes"
    if isinstance(request, SliceRequest):
        need = Resources(request.gpus, request.vcpus, request.ram_gib)
        if not any(need.fits_in(Resources(n.gpu_count, n.vcpus, n.ram_gib)) for n in nodes):
            return f"no {model} node of the fleet is large enough for {request.gpus} GPUs"
        return None
    levels = engine.topology.levels
    level = levels.index(request.required_level) if request.required_level in levels else 0
    per_domain: dict[str, int] = defaultdict(int)
    for n in nodes:
        if request.fabric is not None and request.fabric not in n.path:
            continue
        per_domain[n.path[level]] += 1
    most = max(per_domain.values(), default=0)
    if most < request.node_count:
        where = f"fabric {request.fabric}" if request.fabric else f"any {levels[level]}"
        return (
            f"{request.node_count} {model} nodes can never fit: {where} has at most {most} "
            f"{model} nodes"
        )
    return None


class WaitingQueue:
    """The heads of one cycle (one per GPU model) and the shadows they hold in the engine."""

    def __init__(self, engine: PlacementEngine, now: float) -> None:
        self.engine, self.now = engine, now
        self.heads: dict[str, str] = {}  # GPU model -> id of the head request

    def note(self, no: NoCapacity, model: str | None) -> NoCapacity:
        """Say in a no-capacity answer that queued requests hold capacity of the model."""
        if model is None or model not in self.heads:
            return no
        return NoCapacity(
            f"{no.reason}; some capacity is held for requests queued earlier",
            code=no.code,
            details={**no.details, "queued_ahead": True},
            earliest_start=no.earliest_start,
        )

    def hold(self, request: SliceRequest | GangRequest) -> bool:
        """A queued request does not fit: if it is the first of its GPU model this cycle it
        becomes the head and holds a shadow. Returns whether it is the head."""
        model = request.gpu_model
        if model is None or model in self.heads:
            return False
        self.heads[model] = request.id
        if isinstance(request, SliceRequest):
            self._shadow_slice(request, model)
        else:
            self._shadow_gang(request, model)
        return True

    def _eligible(self, model: str) -> list[str]:
        e = self.engine
        return sorted(n.id for n in e.nodes.values() if n.gpu_model == model and e.eligible[n.id])

    def _book(self, request_id: str, node_id: str, free: Resources) -> None:
        alloc = f"shadow-{request_id}"
        self.engine.add_booking(
            Booking(
                f"{alloc}:{node_id}",
                node_id,
                self.now,
                None,
                BookingClass.on_demand,  # firm: nothing after the head preempts or takes it
                SHADOW_OWNER,
                0,
                free.gpus,
                free.vcpus,
                free.ram_gib,
                alloc,
            )
        )

    def _shadow_slice(self, r: SliceRequest, model: str) -> None:
        best: tuple[str, Resources] | None = None
        for node_id in self._eligible(model):
            cal = self.engine.calendar.nodes[node_id]
            if cal.capacity.gpus < r.gpus:
                continue
            node = self.engine.nodes[node_id]
            if node.whole_only and (r.milli_gpu or r.gpus != node.gpu_count):
                continue  # bare metal is never room for a partial request: hold none of it
            free = cal.free_ahead()
            if free.gpus > 0 and (best is None or free.gpus > best[1].gpus):
                best = (node_id, free)
        if best is not None:
            self._book(r.id, *best)

    def _shadow_gang(self, r: GangRequest, model: str) -> None:
        e = self.engine
        levels = e.topology.levels
        level = levels.index(r.required_level) if r.required_level in levels else 0
        idle: dict[str, list[str]] = defaultdict(list)
        for node_id in self._eligible(model):
            node = e.nodes[node_id]
            if r.fabric is not None and r.fabric not in node.path:
                continue
            cal = e.calendar.nodes[node_id]
            if cal.free_ahead() == cal.capacity:
                idle[node.path[level]].append(node_id)
        if not idle:
            return
        domain = max(sorted(idle), key=lambda d: len(idle[d]))
        for node_id in idle[domain][: r.node_count]:
            self._book(r.id, node_id, e.calendar.nodes[node_id].capacity)
