"""The incremental free-capacity index: per GPU model and topology domain.

Every node is in one category: ``IDLE`` (no bookings), ``SPOT`` (only spot bookings: free for
anything that may preempt or follow them), ``BUSY`` (some non-preemptible booking), or none when
it is not eligible. The index keeps, per (GPU model, level, domain), the count of nodes in each
category; per leaf domain the sets of nodes; per domain the busy nodes sorted by the time they
become free of firm bookings (for future windows and offerings); and, for single-node slices,
buckets of nodes by whole GPUs free from now on plus a max-tree for first fit. A decision reads
these and never scans the fleet; a booking change touches one node's entries (one per level).

A whole-only node (``NodeSnapshot.whole_only``: bare metal, never shared) counts for gangs like
any other, but the slice structures (``buckets``, the max-tree, ``frac``, ``blocks_by_idle``)
leave it out (``blocks_by_idle`` counts it, ``idle_compact_first`` skips it), so it is never
room for a partial request; ``whole[g]`` holds the whole-only nodes
of ``g`` GPUs that are free from now on, for requests of exactly ``g`` GPUs.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from neocloud.placement.calendar import NodeCalendar
from neocloud.placement.model import INF, BookingClass, NodeSnapshot

IDLE, SPOT, BUSY = 0, 1, 2
# a node's entry: category, free of firm bookings from, whole GPUs free ahead, first firm
# booking's start, whether its firm bookings leave a gap between them
State = tuple[int, float, int, float, bool]


class Topology:
    """The domain tree built from node paths: children per domain, nodes per leaf domain."""

    def __init__(self, levels: tuple[str, ...], nodes: Iterable[NodeSnapshot]) -> None:
        self.levels = levels
        self.depth = len(levels)
        self.children: list[dict[str, list[str]]] = [{} for _ in levels]
        self.leaf_nodes: dict[str, list[str]] = {}
        self.roots: list[str] = []
        self.parent: list[dict[str, str]] = [{} for _ in levels]
        self.size: list[dict[str, int]] = [{} for _ in levels]  # nodes per domain
        seen: list[set[str]] = [set() for _ in levels]
        for n in nodes:
            if len(n.path) != self.depth:
                raise ValueError(f"node {n.id} has path {n.path!r}, expected one name per level")
            for i, name in enumerate(n.path):
                self.size[i][name] = self.size[i].get(name, 0) + 1
                if name not in seen[i]:
                    seen[i].add(name)
                    if i == 0:
                        self.roots.append(name)
                    else:
                        self.children[i - 1].setdefault(n.path[i - 1], []).append(name)
                        self.parent[i][name] = n.path[i - 1]
                elif i > 0 and self.parent[i][name] != n.path[i - 1]:
                    raise ValueError(f"domain {name} appears under two parents")
            self.leaf_nodes.setdefault(n.path[-1], []).append(n.id)

    def level_index(self, level: str) -> int:
        try:
            return self.levels.index(level)
        except ValueError:
            raise ValueError(
                f"unknown topology level {level!r}; levels are {self.levels}"
            ) from None

    def domains(self, level: int) -> list[str]:
        if level == 0:
            return self.roots
        out: list[str] = []
        for d in self.domains(level - 1):
            out.extend(self.children[level - 1].get(d, ()))
        return out

    def leaves_under(self, level: int, domain: str) -> list[str]:
        ds = [domain]
        for i in range(level, self.depth - 1):
            ds = [c for d in ds for c in self.children[i].get(d, ())]
        return ds


class _MaxTree:
    """Max segment tree over node ordinals: leftmost node with at least ``k`` free GPUs."""

    def __init__(self, size: int) -> None:
        n = 1
        while n < max(size, 1):
            n *= 2
        self.n = n
        self.t = [-1] * (2 * n)

    def set(self, i: int, v: int) -> None:
        i += self.n
        t = self.t
        t[i] = v
        i //= 2
        while i:
            m = t[2 * i] if t[2 * i] > t[2 * i + 1] else t[2 * i + 1]
            if t[i] == m:
                break
            t[i] = m
            i //= 2

    def leftmost(self, k: int, lo: int = 0) -> int:
        """Smallest ordinal ``>= lo`` whose value is ``>= k``, or -1."""
        return self._find(1, 0, self.n, k, lo)

    def _find(self, i: int, a: int, b: int, k: int, lo: int) -> int:
        if b <= lo or self.t[i] < k:
            return -1
        if b - a == 1:
            return a
        mid = (a + b) // 2
        r = self._find(2 * i, a, mid, k, lo)
        return r if r >= 0 else self._find(2 * i + 1, mid, b, k, lo)


@dataclass(slots=True)
class ModelIndex:
    """The index of one GPU model: ``counts[level][domain]`` is ``[idle, spot, busy]`` nodes;
    ``idle``/``spot``/``busy`` are node sets per leaf domain; ``release[level][domain]`` the
    busy nodes as ``(free of firm bookings from, node)``, sorted; ``buckets[g]`` the nodes with
    ``g`` whole GPUs free from now on; ``blocks_by_idle[k]`` the blocks with ``k`` idle nodes;
    ``frac[m]`` the nodes whose roomiest shared GPU has ``m`` milli-GPU free from now on;
    ``ahead[level][domain]`` the busy nodes as ``(first firm booking starts, node)``, sorted
    (free for good before it); ``holey[level][domain]`` the busy nodes with a gap between two
    firm bookings. Offerings read these to use the time before and between future bookings.
    ``whole[g]``: the whole-only nodes of ``g`` GPUs with all of them free from now on (they
    are in none of ``buckets``, the tree or ``frac``)."""

    counts: list[dict[str, list[int]]]
    idle: dict[str, set[str]]
    spot: dict[str, set[str]]
    busy: dict[str, set[str]]
    release: list[dict[str, list[tuple[float, str]]]]
    ahead: list[dict[str, list[tuple[float, str]]]]
    holey: list[dict[str, set[str]]]
    buckets: list[dict[str, None]]
    tree: _MaxTree
    order: list[str]
    blocks_by_idle: dict[int, dict[str, None]]
    frac: dict[int, dict[str, None]]
    whole: dict[int, dict[str, None]]

    def leftmost(self, k: int, lo: int) -> int:
        """Ordinal of the first node from ``lo`` on with at least ``k`` GPUs free ahead."""
        return self.tree.leftmost(k, lo)


class CapacityIndex:
    """Free capacity per (GPU model, domain), kept up to date one node at a time."""

    def __init__(self, topology: Topology, nodes: dict[str, NodeSnapshot]) -> None:
        self.topology = topology
        levels = topology.levels
        self.block_level = levels.index("block") if "block" in levels else max(len(levels) - 2, 0)
        self.nodes = nodes
        self.whole_only = frozenset(n.id for n in nodes.values() if n.whole_only)
        self.state: dict[str, State | None] = {}
        self.room: dict[str, int] = {}
        # ``ahead`` entries are kept only for first firm starts after ``now`` when they were
        # added: an offering or gang never starts before now, so the others cannot serve one
        self.now = -INF
        self.ordinal: dict[str, int] = {}
        self.models: dict[str, ModelIndex] = {}
        self._counts_of: dict[str, list[list[int]]] = {}
        self._release_of: dict[str, list[list[tuple[float, str]]]] = {}
        self._ahead_of: dict[str, list[list[tuple[float, str]]]] = {}
        self._holey_of: dict[str, list[set[str]]] = {}
        self._sets_of: dict[str, tuple[set[str], set[str], set[str]]] = {}
        by_model: dict[str, list[str]] = {}
        for n in nodes.values():
            by_model.setdefault(n.gpu_model, []).append(n.id)
        for model, ids in by_model.items():
            top = max(nodes[i].gpu_count for i in ids)
            self.models[model] = ModelIndex(
                counts=[{} for _ in topology.levels],
                idle={},
                spot={},
                busy={},
                release=[{} for _ in topology.levels],
                ahead=[{} for _ in topology.levels],
                holey=[{} for _ in topology.levels],
                buckets=[{} for _ in range(top + 1)],
                tree=_MaxTree(len(ids)),
                order=ids,
                blocks_by_idle={},
                frac={},
                whole={},
            )
            mi = self.models[model]
            for i, node_id in enumerate(ids):
                self.ordinal[node_id] = i
                self.state[node_id] = None
                path = nodes[node_id].path
                # the entries a node touches, found once: updates then do no lookups
                self._counts_of[node_id] = [
                    mi.counts[lvl].setdefault(d, [0, 0, 0]) for lvl, d in enumerate(path)
                ]
                self._release_of[node_id] = [
                    mi.release[lvl].setdefault(d, []) for lvl, d in enumerate(path)
                ]
                self._ahead_of[node_id] = [
                    mi.ahead[lvl].setdefault(d, []) for lvl, d in enumerate(path)
                ]
                leaf = path[-1]
                self._holey_of[node_id] = [
                    mi.holey[lvl].setdefault(d, set()) for lvl, d in enumerate(path)
                ]
                self._sets_of[node_id] = (
                    mi.idle.setdefault(leaf, set()),
                    mi.spot.setdefault(leaf, set()),
                    mi.busy.setdefault(leaf, set()),
                )

    def update(
        self, node_id: str, cal: NodeCalendar, eligible: bool, now: float | None = None
    ) -> None:
        """Recompute one node's entry from its calendar and move it between the structures
        (``now``: the engine's time, never moving back)."""
        if now is not None and now > self.now:
            self.now = now
        new = self._classify(cal, eligible)
        old = self.state[node_id]
        node = self.nodes[node_id]
        mi = self.models[node.gpu_model]
        shared = not node.whole_only
        room = cal.fraction_room() if cal.fractions and eligible and shared else -1
        if room != self.room.get(node_id, -1):
            self._set_room(mi, node_id, room)
        if new == old:
            return
        if old is not None and new is not None and old[:2] == new[:2] and old[3:] == new[3:]:
            # same category and release time: only the slice bucket moves
            if shared:
                del mi.buckets[old[2]][node_id]
                mi.buckets[new[2]][node_id] = None
                mi.tree.set(self.ordinal[node_id], new[2])
            else:
                self._whole_slot(mi, node, old[2], -1)
                self._whole_slot(mi, node, new[2], +1)
            self.state[node_id] = new
            return
        if old is not None:
            self._apply(mi, node, old, -1)
        if new is not None:
            self._apply(mi, node, new, +1)
        self.state[node_id] = new
        if shared:
            mi.tree.set(self.ordinal[node_id], -1 if new is None else new[2])

    @staticmethod
    def _whole_slot(mi: ModelIndex, node: NodeSnapshot, free: int, sign: int) -> None:
        """Put a whole-only node in ``whole`` (or take it out) when all its GPUs are free."""
        if free != node.gpu_count:
            return
        if sign > 0:
            mi.whole.setdefault(free, {})[node.id] = None
            return
        s = mi.whole.get(free)
        if s is not None:
            s.pop(node.id, None)
            if not s:
                del mi.whole[free]

    def _set_room(self, mi: ModelIndex, node_id: str, room: int) -> None:
        """Move the node to bucket ``room`` of ``frac`` (-1: none); the caller saw it change."""
        old = self.room.get(node_id, -1)
        if old >= 0:
            s = mi.frac[old]
            del s[node_id]
            if not s:
                del mi.frac[old]
        if room >= 0:
            mi.frac.setdefault(room, {})[node_id] = None
            self.room[node_id] = room
        else:
            self.room.pop(node_id, None)

    @staticmethod
    def _classify(cal: NodeCalendar, eligible: bool) -> State | None:
        if not eligible:
            return None
        if not cal.bookings:
            return (IDLE, -INF, cal.capacity.gpus, -INF, False)
        if len(cal.bookings) == 1:  # the common case (a whole node, or one slice)
            (b,) = cal.bookings.values()
            free1 = cal.capacity.gpus - (1 if b.milli_gpu else b.gpus)
            if b.cls.preemptible:
                return (SPOT, -INF, free1, -INF, False)
            return (BUSY, INF if b.end is None else b.end, free1, b.start, False)
        free = max(cal.free_ahead().gpus, 0)
        spot = BookingClass.spot
        firm = [(b.start, INF if b.end is None else b.end) for b in cal if b.cls is not spot]
        if not firm:
            return (SPOT, -INF, free, -INF, False)
        if len(firm) == 1:
            return (BUSY, firm[0][1], free, firm[0][0], False)
        firm.sort()
        reach, holey = firm[0][1], False
        for start, end in firm:
            if start > reach:
                holey = True  # free between two firm bookings
            if end > reach:
                reach = end
        return (BUSY, reach, free, firm[0][0], holey)

    def _apply(self, mi: ModelIndex, node: NodeSnapshot, st: State, sign: int) -> None:
        cat, until, free, first, holey = st
        node_id = node.id
        counts = self._counts_of[node_id]
        if cat == IDLE:
            block = counts[self.block_level]
            self._move_block(mi, node.path[self.block_level], block[IDLE], block[IDLE] + sign)
        for c in counts:
            c[cat] += sign
        if cat == BUSY and until < INF:
            key = (until, node_id)
            for lst in self._release_of[node_id]:
                if sign > 0:
                    bisect.insort(lst, key)
                else:
                    del lst[bisect.bisect_left(lst, key)]
        if cat == BUSY:
            key = (first, node_id)
            if sign > 0 and first > self.now:
                for lst in self._ahead_of[node_id]:
                    bisect.insort(lst, key)
            elif sign < 0:
                for lst in self._ahead_of[node_id]:
                    i = bisect.bisect_left(lst, key)
                    if i < len(lst) and lst[i] == key:
                        del lst[i]
            if holey:
                for h in self._holey_of[node_id]:
                    if sign > 0:
                        h.add(node_id)
                    else:
                        h.discard(node_id)
        s = self._sets_of[node_id][cat]
        if node.whole_only:
            if sign > 0:
                s.add(node_id)
            else:
                s.discard(node_id)
            self._whole_slot(mi, node, free, sign)
        elif sign > 0:
            s.add(node_id)
            mi.buckets[free][node_id] = None
        else:
            s.discard(node_id)
            mi.buckets[free].pop(node_id, None)

    @staticmethod
    def _move_block(mi: ModelIndex, block: str, old: int, new: int) -> None:
        if old > 0:
            s = mi.blocks_by_idle[old]
            del s[block]
            if not s:
                del mi.blocks_by_idle[old]
        if new > 0:
            mi.blocks_by_idle.setdefault(new, {})[block] = None

    def idle_compact_first(self, gpu_model: str) -> Iterator[str]:
        """Idle nodes that may be shared, those in blocks with the fewest such nodes first (to
        keep whole blocks free for clusters)."""
        mi = self.models.get(gpu_model)
        if mi is None:
            return
        bl = self.block_level
        skip = self.whole_only
        for k in sorted(mi.blocks_by_idle):
            for block in list(mi.blocks_by_idle.get(k, ())):
                for leaf in self.topology.leaves_under(bl, block):
                    idle = mi.idle.get(leaf, ())
                    yield from sorted(idle if not skip else (n for n in idle if n not in skip))

    def snapshot(self) -> dict[str, Any]:
        """Everything the index holds, as plain comparable data (for tests)."""
        out: dict[str, Any] = {}
        for model, mi in self.models.items():
            out[model] = {
                "counts": [{d: tuple(c) for d, c in lvl.items() if any(c)} for lvl in mi.counts],
                "idle": {d: frozenset(s) for d, s in mi.idle.items() if s},
                "spot": {d: frozenset(s) for d, s in mi.spot.items() if s},
                "busy": {d: frozenset(s) for d, s in mi.busy.items() if s},
                "release": [{d: tuple(v) for d, v in lvl.items() if v} for lvl in mi.release],
                "ahead": [
                    {d: t for d, v in lvl.items() if (t := tuple(x for x in v if x[0] > self.now))}
                    for lvl in mi.ahead
                ],
                "holey": [{d: frozenset(s) for d, s in lvl.items() if s} for lvl in mi.holey],
                "buckets": [frozenset(b) for b in mi.buckets],  # order is history, not state
                "blocks_by_idle": {k: frozenset(v) for k, v in mi.blocks_by_idle.items()},
                "frac": {k: frozenset(v) for k, v in mi.frac.items()},
                "whole": {k: frozenset(v) for k, v in mi.whole.items()},
                "tree": tuple(mi.tree.t[mi.tree.n : mi.tree.n + len(mi.order)]),
            }
        return out
