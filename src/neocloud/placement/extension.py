"""Extending an allocation's end: every node must stay free for the longer window."""

from __future__ import annotations

from dataclasses import replace

from neocloud.kernel.errors import InvalidRequest
from neocloud.placement.model import Booking, NoCapacity, Placement
from neocloud.placement.state import FleetState


def extend_allocation(
    state: FleetState, allocation_id: str, new_end: float | None, *, dry_run: bool
) -> Placement | NoCapacity:
    """Move the end of every booking of an allocation to ``new_end`` (``None``: open-ended),
    all or nothing. Spot in the way of the extra time ends when it starts."""
    bookings = state.allocation(allocation_id)
    grown: list[Booking] = []
    blocked: list[str] = []
    for b in bookings:
        if b.end is None or (new_end is not None and new_end <= b.end):
            raise InvalidRequest(
                f"booking {b.id} ends at {b.end}; an extension must end later",
                param="end",
                code="not_an_extension",
            )
        cal = state.calendar.nodes[b.node_id]
        if b.cls.preemptible:
            nxt = cal.next_firm_start(b.end - 1e-9)
            if nxt is not None and (new_end is None or nxt < new_end):
                blocked.append(b.node_id)
                continue
        elif not cal.fits_booking(b, b.end, new_end, ignore_spot=True):
            blocked.append(b.node_id)
            continue
        grown.append(replace(b, end=new_end))
    if blocked:
        return NoCapacity(
            f"{len(blocked)} of {len(bookings)} nodes are booked in the extra time",
            code="extension_blocked",
            details={"node_ids": blocked, "allocation_id": allocation_id},
        )
    truncated: list[Booking] = []
    for b, g in zip(bookings, grown, strict=True):
        if g.cls.preemptible or b.end is None:
            continue
        cal = state.calendar.nodes[b.node_id]
        if cal.fits_booking(b, b.end, new_end, ignore_spot=False):
            continue
        for s in cal:
            ours = s.allocation_id == allocation_id
            if s.cls.preemptible and not ours and s.overlaps(b.end, new_end):
                truncated.append(replace(s, end=max(s.start, b.end)))
    if not dry_run:
        for t in truncated:
            state.remove(t.id)
            if t.end is not None and t.end > t.start:
                state.add(t)
        for b, g in zip(bookings, grown, strict=True):
            state.remove(b.id)
            state.add(g)
    start = min(b.start for b in grown)
    return Placement(allocation_id, tuple(grown), start, new_end, truncated=tuple(truncated))
