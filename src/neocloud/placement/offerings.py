"""Offerings: feasible ``(start, end, domain, nodes)`` options for a reservation, best first.

For each domain at the required level, the earliest start is read from the index: the nodes
free of firm bookings from a time on are kept sorted per domain, so the ``m``-th of them is the
earliest time ``m`` more nodes are free. Free time before and between future bookings counts
too: the index keeps busy nodes sorted by when their first firm booking starts (a node is free
for ``[t, t + duration)`` if it starts at ``t + duration`` or later) and the nodes with a gap
between two firm bookings; when any of these could help, the candidate starts are the ends of
bookings and of gaps' starts, each counted by bisection before the nodes are chosen. Each
candidate start is then checked by choosing the nodes (fewest blocks). Options are ranked by
start, then blocks used.
"""

from __future__ import annotations

import bisect
import heapq

from neocloud.kernel.errors import InvalidRequest
from neocloud.placement.gangs import Avail, GangChooser, domains_used, gang_domains, gang_shape
from neocloud.placement.index import IDLE, SPOT, ModelIndex
from neocloud.placement.model import BookingClass, GangRequest, Offering, OfferingRequest
from neocloud.placement.state import FleetState, Window

PER_DOMAIN = 3  # candidate starts tried per domain
SPOT_NOTICE = 1.0  # s: a reservation that spot is in the way of starts this much after now


def find_offerings(state: FleetState, q: OfferingRequest) -> list[Offering]:
    """Up to ``q.k`` options, earliest first, then fewest preferred-level domains."""
    if q.duration <= 0:
        raise InvalidRequest("an offering needs a positive duration", param="duration")
    if q.k < 1:
        raise InvalidRequest("ask for at least one offering", param="k")
    now = state.now
    es = max(now, now if q.earliest_start is None else q.earliest_start)
    ls = min(now + state.horizon, es + state.horizon if q.latest_start is None else q.latest_start)
    mi = state.index.models.get(q.gpu_model)
    if mi is None or ls < es:
        return []
    gang = GangRequest(
        q.gpu_model,
        q.node_count,
        required_level=q.required_level,
        preferred_level=q.preferred_level,
        fabric=q.fabric,
        cls=BookingClass.reserved,
    )
    shape, cands = gang_domains(state.topology, gang, gang_shape(state.topology, gang))
    level = shape.required
    tries = _candidate_starts(state, mi, level, shape.need, cands, es, ls, q.duration)
    pref = None if shape.preferred is None else state.topology.levels[shape.preferred]
    found: list[Offering] = []
    best_spread: dict[str, int] = {}
    floor = _fewest_possible(state, shape.preferred, shape.need)
    heapq.heapify(tries)
    while tries:
        t, d = heapq.heappop(tries)
        if len(found) >= q.k and t > found[q.k - 1].start:
            break  # every later try ranks after the k found so far
        if best_spread.get(d, floor + 1) <= floor:
            continue  # already offered as compact as it gets
        w = state.window(
            GangRequest(q.gpu_model, 1, start=t, end=t + q.duration, cls=BookingClass.reserved),
            now,
        )
        extra = state.released(q.gpu_model, level, d, w) + _in_gaps(state, mi, level, d, w)
        chooser = GangChooser(
            Avail(state.index, q.gpu_model, state.fast_cats(w), extra), state.policy, shape
        )
        choice = chooser.choose([d])
        if choice is None:
            if t == now and now + SPOT_NOTICE <= ls:
                # spot in the way now: a start a moment later ends it instead
                heapq.heappush(tries, (now + SPOT_NOTICE, d))
            continue
        nodes = choice[1]
        used = domains_used(state.topology, (state.nodes[n] for n in nodes))
        spread = used.get(pref, 1) if pref else 1
        if d in best_spread and best_spread[d] <= spread:
            continue  # a later start here is only worth offering if it is more compact
        best_spread[d] = spread
        found.append(Offering(t, t + q.duration, d, tuple(nodes), used))
    found.sort(key=lambda o: (o.start, o.domains_used.get(pref, 1) if pref else 1, o.domain))
    return found[: q.k]


def _candidate_starts(
    state: FleetState,
    mi: ModelIndex,
    level: int,
    need: int,
    cands: list[str],
    es: float,
    ls: float,
    duration: float,
) -> list[tuple[float, str]]:
    """Per domain, the first starts in ``[es, ls]`` when ``need`` nodes are free of firm
    bookings for the whole duration, soonest first."""
    tries: list[tuple[float, str]] = []
    for d in cands:
        c = mi.counts[level].get(d)
        base = 0 if c is None else c[IDLE] + c[SPOT]
        lst = mi.release[level].get(d, [])
        m = need - base
        later = lst[max(m - 1, 0) : max(m - 1, 0) + PER_DOMAIN]
        ahead = mi.ahead[level].get(d, [])
        holes = _holes(state, mi, level, d, es)
        if holes or (ahead and ahead[-1][0] >= es + duration):
            # time before or between future bookings may serve: count nodes at each start
            starts = {es} | {max(es, t) for t, _ in lst[: max(m - 1, 0) + PER_DOMAIN]}
            starts |= {gs for gaps in holes.values() for gs, _ in gaps if gs >= es}
            found = 0
            for t in sorted(starts):
                if t > ls or found >= PER_DOMAIN:
                    break
                if _free_count(base, lst, ahead, holes, t, duration) >= need:
                    tries.append((t, d))
                    found += 1
            continue
        times = [es] if m <= 0 else []
        times += [max(es, t) for t, _ in later]
        seen: set[float] = set()
        for t in times:
            if t <= ls and t not in seen and len(seen) < PER_DOMAIN:
                seen.add(t)
                tries.append((t, d))
    tries.sort()
    return tries


def _holes(
    state: FleetState, mi: ModelIndex, level: int, d: str, es: float
) -> dict[str, list[tuple[float, float]]]:
    """The gaps between firm bookings, ending after ``es``, of the holey nodes under ``d``."""
    out: dict[str, list[tuple[float, float]]] = {}
    for node_id in mi.holey[level].get(d, ()):
        gaps = state.calendar.nodes[node_id].firm_gaps(after=es)
        if gaps:
            out[node_id] = gaps
    return out


def _free_count(
    base: int,
    release: list[tuple[float, str]],
    ahead: list[tuple[float, str]],
    holes: dict[str, list[tuple[float, float]]],
    t: float,
    duration: float,
) -> int:
    """Nodes of a domain free of firm bookings during ``[t, t + duration)``: idle or spot,
    free for good by ``t``, not booked before ``t + duration``, or with a gap around it."""
    n = base + bisect.bisect_right(release, (t, "\uffff"))
    n += len(ahead) - bisect.bisect_left(ahead, (t + duration, ""))
    for gaps in holes.values():
        if any(gs <= t and t + duration <= ge for gs, ge in gaps):
            n += 1
    return n


def _in_gaps(state: FleetState, mi: ModelIndex, level: int, d: str, w: Window) -> list[str]:
    """Busy nodes of ``d`` free during window ``w`` before their first firm booking or in a
    gap between two (checked on the calendar where spot could be in the way)."""
    if w.end is None:
        return []
    ahead = mi.ahead[level].get(d, [])
    out = [n for _, n in ahead[bisect.bisect_left(ahead, (w.end, "")) :]]
    if not w.future:
        out = [n for n in out if state.node_fits(n, state.whole(n), w)]
    for node_id in mi.holey[level].get(d, ()):
        if state.calendar.nodes[node_id].firm_until() > w.start and state.node_fits(
            node_id, state.whole(node_id), w
        ):
            out.append(node_id)
    return list(dict.fromkeys(n for n in out if state.eligible[n]))


def _fewest_possible(state: FleetState, level: int | None, need: int) -> int:
    """A lower bound on the preferred-level domains a gang of ``need`` nodes spans."""
    if level is None:
        return 1
    biggest = max(state.topology.size[level].values(), default=1)
    return -(-need // biggest)
