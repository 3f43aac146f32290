"""Offerings: feasible ``(start, end, domain, nodes)`` options for a reservation, best first.

For each domain at the required level, the earliest start is read from the index: the nodes
free of firm bookings from a time on are kept sorted per domain, so the ``m``-th of them is the
earliest time ``m`` more nodes are free. Each candidate start is then checked by choosing the
nodes (fewest blocks). Options are ranked by start, then blocks used. Gaps between two future
bookings on a node are not offered (a node counts from when it is free for good).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from neocloud.kernel.errors import InvalidRequest
from neocloud.placement.gangs import Avail, GangChooser, domains_used
from neocloud.placement.index import IDLE, SPOT, ModelIndex
from neocloud.placement.model import BookingClass, GangRequest, Offering, OfferingRequest

if TYPE_CHECKING:
    from neocloud.placement.engine import PlacementEngine

PER_DOMAIN = 3  # candidate starts tried per domain


def find_offerings(engine: PlacementEngine, q: OfferingRequest) -> list[Offering]:
    """Up to ``q.k`` options, earliest first, then fewest preferred-level domains."""
    if q.duration <= 0:
        raise InvalidRequest("an offering needs a positive duration", param="duration")
    if q.k < 1:
        raise InvalidRequest("ask for at least one offering", param="k")
    now = engine.now
    es = max(now, now if q.earliest_start is None else q.earliest_start)
    ls = min(
        now + engine.horizon, es + engine.horizon if q.latest_start is None else q.latest_start
    )
    mi = engine.index.models.get(q.gpu_model)
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
    shape, cands = engine._gang_domains(gang, engine._shape(gang))
    level = shape.required
    tries = _candidate_starts(mi, level, shape.need, cands, es, ls)
    pref = None if shape.preferred is None else engine.topology.levels[shape.preferred]
    found: list[Offering] = []
    best_spread: dict[str, int] = {}
    floor = _fewest_possible(engine, shape.preferred, shape.need)
    for t, d in tries:
        if len(found) >= q.k and t > found[q.k - 1].start:
            break  # every later try ranks after the k found so far
        if best_spread.get(d, floor + 1) <= floor:
            continue  # already offered as compact as it gets
        w = engine._window(
            GangRequest(q.gpu_model, 1, start=t, end=t + q.duration, cls=BookingClass.reserved),
            now,
        )
        extra = engine._released(q.gpu_model, level, d, w)
        chooser = GangChooser(
            Avail(engine.index, q.gpu_model, engine._fast_cats(w), extra), engine.policy, shape
        )
        choice = chooser.choose([d])
        if choice is None:
            continue
        nodes = choice[1]
        used = domains_used(engine.topology, (engine.nodes[n] for n in nodes))
        spread = used.get(pref, 1) if pref else 1
        if d in best_spread and best_spread[d] <= spread:
            continue  # a later start here is only worth offering if it is more compact
        best_spread[d] = spread
        found.append(Offering(t, t + q.duration, d, tuple(nodes), used))
    found.sort(key=lambda o: (o.start, o.domains_used.get(pref, 1) if pref else 1, o.domain))
    return found[: q.k]


def _candidate_starts(
    mi: ModelIndex, level: int, need: int, cands: list[str], es: float, ls: float
) -> list[tuple[float, str]]:
    """Per domain, the first starts in ``[es, ls]`` when ``need`` nodes are free of firm
    bookings (read from the sorted release times), soonest first."""
    tries: list[tuple[float, str]] = []
    for d in cands:
        c = mi.counts[level].get(d)
        base = 0 if c is None else c[IDLE] + c[SPOT]
        lst = mi.release[level].get(d, [])
        m = need - base
        times = [es] if m <= 0 else []
        times += [max(es, t) for t, _ in lst[max(m - 1, 0) : max(m - 1, 0) + PER_DOMAIN]]
        seen: set[float] = set()
        for t in times:
            if t <= ls and t not in seen and len(seen) < PER_DOMAIN:
                seen.add(t)
                tries.append((t, d))
    tries.sort()
    return tries


def _fewest_possible(engine: PlacementEngine, level: int | None, need: int) -> int:
    """A lower bound on the preferred-level domains a gang of ``need`` nodes spans."""
    if level is None:
        return 1
    biggest = max(engine.topology.size[level].values(), default=1)
    return -(-need // biggest)
