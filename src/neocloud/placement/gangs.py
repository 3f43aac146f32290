"""Choosing the nodes of a gang: one domain at the required level, then the fewest child domains
at each level below (fewest blocks, then fewest racks inside each block), segments of ``k``
nodes kept inside one domain of the segment level.

``gang_shape`` turns a request's level names into a ``GangShape``; ``gang_domains`` lists the
domains it may use (a pinned fabric narrows them); ``gang_view`` and ``domain_chooser`` build
the ``GangChooser`` over what a window leaves free (index first, calendars only when needed).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from neocloud.kernel.errors import InvalidRequest
from neocloud.placement.index import BUSY, IDLE, SPOT, CapacityIndex, Topology
from neocloud.placement.model import GangRequest, NodeSnapshot
from neocloud.placement.policies import PlacementPolicy, fewest_count
from neocloud.placement.state import FleetState, Window

_IDLE_ONLY = (IDLE,)
_IDLE_SPOT = (IDLE, SPOT)


class Avail:
    """The nodes one request may use: index categories, plus extra nodes found by a calendar
    check (per leaf domain), minus excluded nodes. Counts per domain at any level."""

    def __init__(
        self,
        index: CapacityIndex,
        gpu_model: str,
        cats: tuple[int, ...],
        extra: Iterable[str] = (),
        exclude: Iterable[str] = (),
    ) -> None:
        self.index = index
        self.topo: Topology = index.topology
        self.mi = index.models.get(gpu_model)
        self.cats = cats
        self.extra: dict[str, list[str]] = {}
        self.delta: list[dict[str, int]] = [{} for _ in self.topo.levels]
        self.excluded: set[str] = set()
        nodes = index.nodes
        for node_id in extra:
            self.extra.setdefault(nodes[node_id].path[-1], []).append(node_id)
            self._bump(nodes[node_id], 1)
        for node_id in exclude:
            st = index.state.get(node_id)
            in_cats = st is not None and st[0] in cats
            in_extra = node_id in self.extra.get(nodes[node_id].path[-1], ())
            if (in_cats or in_extra) and node_id not in self.excluded:
                self.excluded.add(node_id)
                self._bump(nodes[node_id], -1)

    def _bump(self, node: NodeSnapshot, by: int) -> None:
        for i, d in enumerate(node.path):
            self.delta[i][d] = self.delta[i].get(d, 0) + by

    def count(self, level: int, domain: str) -> int:
        mi = self.mi
        if mi is None:
            return 0
        c = mi.counts[level].get(domain)
        if c is None:
            n = 0
        elif self.cats == _IDLE_ONLY:
            n = c[0]
        elif self.cats == _IDLE_SPOT:
            n = c[0] + c[1]
        else:
            n = sum(c[k] for k in self.cats)
        d = self.delta[level]
        return n + d[domain] if domain in d else n

    def nodes(self, leaf: str) -> list[str]:
        mi = self.mi
        if mi is None:
            return []
        out: list[str] = []
        for cat, sets in ((0, mi.idle), (1, mi.spot), (2, mi.busy)):
            if cat in self.cats:
                out.extend(sets.get(leaf, ()))
        out.extend(self.extra.get(leaf, ()))
        if self.excluded:
            out = [n for n in out if n not in self.excluded]
        return out


@dataclass(frozen=True, slots=True)
class GangShape:
    """The topology constraints of a gang, as level indices."""

    need: int
    required: int
    preferred: int | None
    segment: int | None
    segment_level: int


class GangChooser:
    """One gang decision over one availability view."""

    def __init__(self, avail: Avail, policy: PlacementPolicy, shape: GangShape) -> None:
        self.a = avail
        self.topo = avail.topo
        self.policy = policy
        self.shape = shape
        self._eff: dict[tuple[int, str], int] = {}

    def eff(self, level: int, domain: str) -> int:
        """Nodes usable in ``domain`` given segments (whole segments only at or above it)."""
        key = (level, domain)
        v = self._eff.get(key)
        if v is not None:
            return v
        seg, sl = self.shape.segment, self.shape.segment_level
        if seg is None or level > sl:
            v = self.a.count(level, domain)
        elif level == sl:
            v = self.a.count(level, domain) // seg * seg
        elif self.a.count(level, domain) < seg:
            v = 0
        else:
            v = sum(self.eff(level + 1, c) for c in self.topo.children[level].get(domain, ()))
        self._eff[key] = v
        return v

    def spread(self, domain: str) -> int:
        """Fewest preferred-level domains the gang needs inside ``domain``."""
        pref, req = self.shape.preferred, self.shape.required
        if pref is None or pref <= req:
            return 1
        under = [domain]
        for lvl in range(req, pref):
            under = [c for d in under for c in self.topo.children[lvl].get(d, ())]
        return fewest_count([self.eff(pref, d) for d in under], self.shape.need)

    def choose(self, candidates: Sequence[str]) -> tuple[str, list[str]] | None:
        need, req = self.shape.need, self.shape.required
        fit = [(d, e) for d in candidates if (e := self.eff(req, d)) >= need]
        domain = self.policy.select_domain(fit, need, _Spread(self))
        if domain is None:
            return None
        return domain, self.pick(req, domain, need)

    def best_available(self, candidates: Sequence[str]) -> tuple[str | None, int]:
        best: tuple[str | None, int] = (None, 0)
        for d in candidates:
            e = self.eff(self.shape.required, d)
            if e > best[1]:
                best = (d, e)
        return best

    def pick(self, level: int, domain: str, need: int) -> list[str]:
        if level == self.topo.depth - 1:
            return self.policy.pick_nodes(self.a.nodes(domain), need)
        children = [
            (c, e)
            for c in self.topo.children[level].get(domain, ())
            if (e := self.eff(level + 1, c)) > 0
        ]
        out: list[str] = []
        for child, n in self.policy.split(children, need):
            out.extend(self.pick(level + 1, child, n))
        return out


def domains_used(topo: Topology, nodes: Iterable[NodeSnapshot]) -> dict[str, int]:
    """Distinct domains per level among ``nodes`` (e.g. ``{"block": 2, "rack": 5}``)."""
    paths = [n.path for n in nodes]
    return {lvl: len({p[i] for p in paths}) for i, lvl in enumerate(topo.levels)}


class _Spread:
    """``GangChooser.spread`` with its lower bound, for ``PlacementPolicy.select_domain``."""

    def __init__(self, chooser: GangChooser) -> None:
        self.chooser = chooser
        pref, req = chooser.shape.preferred, chooser.shape.required
        if pref is None or pref <= req:
            self.floor = 1
        else:
            biggest = max(chooser.topo.size[pref].values(), default=1)
            self.floor = -(-chooser.shape.need // biggest)

    def __call__(self, domain: str) -> int:
        return self.chooser.spread(domain)


def gang_shape(topo: Topology, r: GangRequest) -> GangShape:
    """The gang's levels as indices; ``InvalidRequest`` for no nodes, a segment size that does
    not divide the gang, or a segment level not below the required level."""
    if r.node_count < 1:
        raise InvalidRequest("a gang needs at least one node", param="node_count")
    req = topo.level_index(r.required_level)
    pref = None if r.preferred_level is None else topo.level_index(r.preferred_level)
    seg_level = topo.level_index(r.segment_level)
    if r.segment is not None:
        if r.segment < 1 or r.node_count % r.segment:
            raise InvalidRequest(
                f"segment size {r.segment} does not divide {r.node_count} nodes",
                param="segment",
            )
        if seg_level <= req:
            raise InvalidRequest(
                f"segment level {r.segment_level} must lie below {r.required_level}",
                param="segment_level",
            )
    return GangShape(r.node_count, req, pref, r.segment, seg_level)


def ancestor(topo: Topology, level: int, domain: str, target: int) -> str:
    """The domain at level ``target`` (above ``level``) that holds ``domain``."""
    d = domain
    for lvl in range(level, target, -1):
        d = topo.parent[lvl][d]
    return d


def gang_domains(topo: Topology, r: GangRequest, shape: GangShape) -> tuple[GangShape, list[str]]:
    """The domains at the required level a gang may use (narrowed by a pinned fabric)."""
    if r.fabric is None:
        return shape, topo.domains(shape.required)
    pin_level = topo.level_index("fabric") if "fabric" in topo.levels else shape.required
    if pin_level > 0 and r.fabric not in topo.parent[pin_level]:
        raise InvalidRequest(f"unknown fabric {r.fabric!r}", param="fabric")
    if pin_level > shape.required:
        # pinned below the required level: the pinned fabric becomes the search domain
        return replace(shape, required=pin_level), [r.fabric]
    cands = [
        d
        for d in topo.domains(shape.required)
        if ancestor(topo, shape.required, d, pin_level) == r.fabric
    ]
    return shape, cands


def gang_view(
    s: FleetState,
    r: GangRequest,
    w: Window,
    shape: GangShape,
    exclude: Iterable[str] = (),
    *,
    scan: bool = True,
) -> tuple[GangChooser, list[str]]:
    """The chooser for a gang: index categories and released nodes first; only if no
    domain fits that way (and a window could fit a gap), a calendar check of busy nodes."""
    shape, cands = gang_domains(s.topology, r, shape)
    extra: list[str] = []
    for d in cands:
        extra.extend(s.released(r.gpu_model, shape.required, d, w))
    cats = s.fast_cats(w)
    chooser = GangChooser(Avail(s.index, r.gpu_model, cats, extra, exclude), s.policy, shape)
    gaps_possible = w.end is not None or not w.firm  # open-ended firm: no gap can hold it
    short = all(chooser.eff(shape.required, d) < shape.need for d in cands)
    if scan and gaps_possible and short:
        # most promising domains first; stop at the first that fits
        mi = s.index.models[r.gpu_model]
        skip = set(extra)
        for d in sorted(cands, key=lambda d: -chooser.eff(shape.required, d)):
            c = mi.counts[shape.required].get(d, [0, 0, 0])
            if chooser.eff(shape.required, d) + c[BUSY] < shape.need:
                continue  # even every busy node would not be enough
            extra.extend(s.scan(r.gpu_model, shape.required, d, w, skip))
            chooser = GangChooser(
                Avail(s.index, r.gpu_model, cats, extra, exclude), s.policy, shape
            )
            if chooser.eff(shape.required, d) >= shape.need:
                break
    return chooser, cands


def domain_chooser(
    s: FleetState, r: GangRequest, w: Window, shape: GangShape, domain: str, exclude: set[str]
) -> GangChooser:
    """A chooser for one domain: fast path first, then a calendar check of its nodes."""
    extra = s.released(r.gpu_model, shape.required, domain, w)
    cats = s.fast_cats(w)
    chooser = GangChooser(Avail(s.index, r.gpu_model, cats, extra, exclude), s.policy, shape)
    if chooser.eff(shape.required, domain) < shape.need:
        extra = extra + s.scan(r.gpu_model, shape.required, domain, w, set(extra) | exclude)
        chooser = GangChooser(Avail(s.index, r.gpu_model, cats, extra, exclude), s.policy, shape)
    return chooser
