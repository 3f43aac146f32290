"""Best fit in time for gangs with a fixed window: nodes whose bookings hug the window.

A gang booked for ``[start, end)`` on a node leaves idle time on either side of it: from the
end of the node's previous firm booking to ``start`` and from ``end`` to the start of its next
one. Taking nodes where that slack is smallest fills the gaps between bookings and keeps nodes
with long free windows (idle ones above all) for the long requests that need them. Nodes with
no booking on one side count ``horizon`` for that side, so idle nodes come last. Within a
domain, blocks are taken in the order of their tightest node, each block's nodes (tightest
first) before the next block's, so a gang spans few blocks; the domain at the required level
is the one whose picked nodes have the least slack in total.

The nodes free for a window are found from the index without scanning the fleet's calendars:
idle (and, for a future window, spot-only) nodes, busy nodes free for good before ``start``
(the release lists), busy nodes whose first firm booking starts at ``end`` or later (the ahead
lists), and nodes with a gap between two firm bookings (checked on their calendar). When the
best domain's nodes would all be idle there is nothing to fit in time, and the caller falls
back to the topology-aware choice (fewest blocks).
"""

from __future__ import annotations

import bisect

from neocloud.placement.gangs import GangShape
from neocloud.placement.index import IDLE, SPOT, ModelIndex
from neocloud.placement.model import INF, GangRequest
from neocloud.placement.state import FleetState, Window


def time_fit_gang(
    state: FleetState, r: GangRequest, w: Window, shape: GangShape, cands: list[str]
) -> tuple[str, list[str]] | None:
    """``(domain, nodes)`` with the least slack around ``w``, or ``None`` when no domain has
    the nodes or none has a node with a booking near the window (then topology decides)."""
    mi = state.index.models.get(r.gpu_model)
    if mi is None or w.end is None or shape.required > state.index.block_level:
        return None
    big = state.horizon
    cats = (IDLE, SPOT) if w.future else (IDLE,)
    best: tuple[float, str, list[str]] | None = None
    for d in cands:
        c = mi.counts[shape.required].get(d)
        loose = 0 if c is None else sum(c[k] for k in cats)
        tight = _tight_nodes(state, mi, shape.required, d, w, big)
        if not tight or len(tight) + loose < shape.need:
            continue
        total, pick = _block_major(state, mi, shape.required, d, tight, shape.need, cats, big)
        if best is None or (total, d) < (best[0], best[1]):
            best = (total, d, pick)
    return None if best is None else (best[1], best[2])


def _block_major(
    state: FleetState,
    mi: ModelIndex,
    level: int,
    d: str,
    tight: dict[str, float],
    need: int,
    cats: tuple[int, ...],
    big: float,
) -> tuple[float, list[str]]:
    """Blocks in the order of their tightest node, each block's nodes (tight ones by slack,
    then its idle ones) before the next block's; then blocks of idle nodes only, those with
    the fewest first. Returns the total slack and the nodes."""
    bl = state.index.block_level
    nodes = state.nodes
    counts = mi.counts[bl]

    def loose_in(block: str) -> int:
        c = counts.get(block)
        return 0 if c is None else c[IDLE] + c[SPOT]

    keyed = sorted((slack, loose_in(nodes[n].path[bl]), n) for n, slack in tight.items())
    by_block: dict[str, list[tuple[float, str]]] = {}
    for slack, _, n in keyed:
        by_block.setdefault(nodes[n].path[bl], []).append((slack, n))
    sets = [mi.idle, mi.spot][: len(cats)]
    pick: list[str] = []
    total = 0.0

    def loose_of(block: str) -> list[str]:
        leaves = state.topology.leaves_under(bl, block)
        return sorted(n for leaf in leaves for s in sets for n in s.get(leaf, ()))

    for block, lst in by_block.items():
        for slack, n in lst[: need - len(pick)]:
            pick.append(n)
            total += slack
        more = loose_of(block)[: need - len(pick)]
        pick.extend(more)
        total += 2 * big * len(more)
        if len(pick) >= need:
            return total, pick
    rest = []
    for block in _blocks_under(state, level, d):
        k = loose_in(block)
        if k and block not in by_block:
            rest.append((k, block))
    for _, block in sorted(rest):
        more = loose_of(block)[: need - len(pick)]
        pick.extend(more)
        total += 2 * big * len(more)
        if len(pick) >= need:
            break
    return total, pick


def _blocks_under(state: FleetState, level: int, d: str) -> list[str]:
    ds = [d]
    for i in range(level, state.index.block_level):
        ds = [c for x in ds for c in state.topology.children[i].get(x, ())]
    return ds


def _tight_nodes(
    state: FleetState, mi: ModelIndex, level: int, d: str, w: Window, big: float
) -> dict[str, float]:
    """The busy nodes of ``d`` free of firm bookings for ``w``, with their slack."""
    assert w.end is not None
    start, end = w.start, w.end
    out: dict[str, float] = {}
    released = mi.release[level].get(d, [])
    for until, n in released[: bisect.bisect_right(released, (start, "\uffff"))]:
        out[n] = min(start - until, big) + big
    ahead = mi.ahead[level].get(d, [])
    for first, n in ahead[bisect.bisect_left(ahead, (end, "")) :]:
        if w.future or state.node_fits(n, state.whole(n), w):
            out[n] = big + min(first - end, big)
    for n in mi.holey[level].get(d, ()):
        if state.node_fits(n, state.whole(n), w):
            before, after = -INF, INF
            for b in state.calendar.nodes[n]:
                if b.cls.preemptible:
                    continue
                b_end = INF if b.end is None else b.end
                if b_end <= start:
                    before = max(before, b_end)
                elif b.start >= end:
                    after = min(after, b.start)
            out[n] = min(start - before, big) + min(after - end, big)
    return out
