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
from typing import TYPE_CHECKING

from neocloud.placement.gangs import GangShape
from neocloud.placement.index import IDLE, SPOT, ModelIndex
from neocloud.placement.model import INF, GangRequest

if TYPE_CHECKING:
    from neocloud.placement.engine import PlacementEngine, _Window


def time_fit_gang(
    e: PlacementEngine, r: GangRequest, w: _Window, shape: GangShape, cands: list[str]
) -> tuple[str, list[str]] | None:
    """``(domain, nodes)`` with the least slack around ``w``, or ``None`` when no domain has
    the nodes or the best one would use idle nodes only."""
    mi = e.index.models.get(r.gpu_model)
    if mi is None or w.end is None:
        return None
    big = e.horizon
    best: tuple[float, str, list[str]] | None = None
    for d in cands:
        scored = _free_nodes(e, mi, shape.required, d, w, big)
        if len(scored) < shape.need:
            continue
        scored.sort()
        pick = _block_major(scored, shape.need)
        total = sum(p[0] for p in pick)
        if best is None or (total, d) < (best[0], best[1]):
            best = (total, d, [p[-1] for p in pick])
    if best is None or best[0] >= 2 * big * shape.need:
        return None
    return best[1], best[2]


def _block_major(
    scored: list[tuple[float, int, str, str]], need: int
) -> list[tuple[float, int, str, str]]:
    """Blocks in the order of their tightest node; each block's nodes, tightest first, before
    the next block's (so the gang spans few blocks)."""
    by_block: dict[str, list[tuple[float, int, str, str]]] = {}
    for p in scored:  # sorted: each block's list is tightest first, blocks by their best
        by_block.setdefault(p[2], []).append(p)
    pick: list[tuple[float, int, str, str]] = []
    for nodes in by_block.values():
        pick.extend(nodes[: need - len(pick)])
        if len(pick) >= need:
            break
    return pick


def _free_nodes(
    e: PlacementEngine, mi: ModelIndex, level: int, d: str, w: _Window, big: float
) -> list[tuple[float, int, str, str]]:
    """The nodes of ``d`` free of firm bookings for ``w`` as ``(slack, idle nodes in its
    block, block, node)``."""
    assert w.end is not None
    start, end = w.start, w.end
    topo = e.topology
    bl = e.index.block_level
    out: dict[str, float] = {}
    leaves = topo.leaves_under(level, d)
    sets = (mi.idle, mi.spot) if w.future else (mi.idle,)
    for s in sets:
        for leaf in leaves:
            for n in s.get(leaf, ()):
                out[n] = 2 * big
    released = mi.release[level].get(d, [])
    for until, n in released[: bisect.bisect_right(released, (start, "\uffff"))]:
        out[n] = min(start - until, big) + big
    ahead = mi.ahead[level].get(d, [])
    for first, n in ahead[bisect.bisect_left(ahead, (end, "")) :]:
        if w.future or e._node_fits(n, e._whole(n), w):
            out[n] = big + min(first - end, big)
    for n in mi.holey[level].get(d, ()):
        if e._node_fits(n, e._whole(n), w):
            before, after = -INF, INF
            for b in e.calendar.nodes[n]:
                if b.cls.preemptible:
                    continue
                b_end = INF if b.end is None else b.end
                if b_end <= start:
                    before = max(before, b_end)
                elif b.start >= end:
                    after = min(after, b.start)
            out[n] = min(start - before, big) + min(after - end, big)
    counts = mi.counts[bl]
    nodes = e.nodes
    res = []
    for n, slack in out.items():
        block = nodes[n].path[bl]
        c = counts.get(block)
        res.append((slack, 0 if c is None else c[IDLE] + c[SPOT], block, n))
    return res
