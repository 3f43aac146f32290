"""Named placement policies: how to pick a domain, split a gang over child domains, pick nodes,
and pick the node for a single-node slice.

``first_fit`` and ``random`` are baselines. ``best_fit`` is Kueue TAS BestFit / Slurm
``topology/tree``: the smallest domain that fits, one child domain when one is big enough
(the tightest), else the largest children first and the tightest fit last. ``default`` adds
what a GPU cloud cares about: among domains that fit it takes the one needing the fewest
preferred-level domains (blocks), then the tightest; slices go to the fullest node that fits,
and among those to the node whose block has the fewest idle nodes, keeping whole blocks free
for clusters.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from neocloud.kernel.errors import InvalidRequest

Fits = Callable[[str], bool]
IdleNodes = Callable[[], Iterable[str]]


class UnknownPolicy(InvalidRequest, ValueError):
    """A policy name that is not registered."""

    default_code = "unknown_policy"


class Spread(Protocol):
    """The fewest preferred-level domains a gang would span in a domain; ``floor`` is a lower
    bound over all domains (no domain can do better)."""

    floor: int

    def __call__(self, domain: str) -> int: ...


class SliceCandidates(Protocol):
    """What a policy may read to pick a node for a slice (one GPU model)."""

    buckets: list[dict[str, None]]
    order: list[str]

    def leftmost(self, k: int, lo: int) -> int: ...


class PlacementPolicy(Protocol):
    """How the engine picks a gang's domain, shares it among child domains and nodes, and
    picks the node of a single-node slice (``slice_policies.SlicePolicy`` places shared-GPU
    pods in the fragmentation simulator instead)."""

    name: str

    def select_domain(
        self, candidates: Sequence[tuple[str, int]], need: int, spread: Spread
    ) -> str | None:
        """Pick a domain among ``(name, available)`` pairs that all have ``available >= need``;
        ``spread(name)`` is the fewest preferred-level domains the gang would span there."""
        ...

    def split(self, children: Sequence[tuple[str, int]], need: int) -> list[tuple[str, int]]:
        """Share ``need`` nodes among child domains with the given capacities (sum >= need)."""
        ...

    def pick_nodes(self, nodes: Sequence[str], need: int) -> list[str]: ...

    def pick_slice_node(
        self, cand: SliceCandidates, gpus: int, fits: Fits, idle_nodes: IdleNodes
    ) -> str | None: ...


def fewest_split(children: Sequence[tuple[str, int]], need: int) -> list[tuple[str, int]]:
    """Fewest children: the tightest single child that fits, else largest first and the
    tightest fit for the remainder (this minimises the number of children used)."""
    fit = [c for c in children if c[1] >= need]
    if fit:
        name, _ = min(fit, key=lambda c: c[1])
        return [(name, need)]
    out: list[tuple[str, int]] = []
    rest = sorted(children, key=lambda c: -c[1])
    i = 0
    while need > 0:
        tail = [c for c in rest[i:] if c[1] >= need]
        if tail:
            name, _ = min(tail, key=lambda c: c[1])
            out.append((name, need))
            return out
        name, cap = rest[i]
        out.append((name, cap))
        need -= cap
        i += 1
    return out


def fewest_count(caps: Sequence[int], need: int) -> int:
    """How many of ``caps`` (largest first) it takes to reach ``need``."""
    total = n = 0
    for cap in sorted(caps, reverse=True):
        if total >= need:
            break
        total += cap
        n += 1
    return n if total >= need else 1 << 30


def _sequential(children: Sequence[tuple[str, int]], need: int) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for name, cap in children:
        if need <= 0:
            break
        take = min(cap, need)
        if take > 0:
            out.append((name, take))
            need -= take
    return out


class FirstFit:
    """Domains, children and nodes in topology order; the first that fits."""

    name = "first_fit"

    def select_domain(
        self, candidates: Sequence[tuple[str, int]], need: int, spread: Spread
    ) -> str | None:
        return candidates[0][0] if candidates else None

    def split(self, children: Sequence[tuple[str, int]], need: int) -> list[tuple[str, int]]:
        return _sequential(children, need)

    def pick_nodes(self, nodes: Sequence[str], need: int) -> list[str]:
        return sorted(nodes)[:need]

    def pick_slice_node(
        self, cand: SliceCandidates, gpus: int, fits: Fits, idle_nodes: IdleNodes
    ) -> str | None:
        i = cand.leftmost(gpus, 0)
        while i >= 0:
            node = cand.order[i]
            if fits(node):
                return node
            i = cand.leftmost(gpus, i + 1)
        return None


class RandomFit:
    """Uniformly random among what fits (seeded, so runs repeat)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.rng = _random.Random(seed)

    def select_domain(
        self, candidates: Sequence[tuple[str, int]], need: int, spread: Spread
    ) -> str | None:
        return self.rng.choice(candidates)[0] if candidates else None

    def split(self, children: Sequence[tuple[str, int]], need: int) -> list[tuple[str, int]]:
        shuffled = list(children)
        self.rng.shuffle(shuffled)
        return _sequential(shuffled, need)

    def pick_nodes(self, nodes: Sequence[str], need: int) -> list[str]:
        return self.rng.sample(sorted(nodes), need)

    def pick_slice_node(
        self, cand: SliceCandidates, gpus: int, fits: Fits, idle_nodes: IdleNodes
    ) -> str | None:
        start = self.rng.randrange(max(len(cand.order), 1))
        for lo, stop in ((start, len(cand.order)), (0, start)):
            i = cand.leftmost(gpus, lo)
            while 0 <= i < stop:
                node = cand.order[i]
                if fits(node):
                    return node
                i = cand.leftmost(gpus, i + 1)
        return None


class BestFit:
    """The smallest domain that fits; the fewest, tightest children; the fullest node."""

    name = "best_fit"

    def select_domain(
        self, candidates: Sequence[tuple[str, int]], need: int, spread: Spread
    ) -> str | None:
        return min(candidates, key=lambda c: c[1])[0] if candidates else None

    def split(self, children: Sequence[tuple[str, int]], need: int) -> list[tuple[str, int]]:
        return fewest_split(children, need)

    def pick_nodes(self, nodes: Sequence[str], need: int) -> list[str]:
        return sorted(nodes)[:need]

    def pick_slice_node(
        self, cand: SliceCandidates, gpus: int, fits: Fits, idle_nodes: IdleNodes
    ) -> str | None:
        for bucket in cand.buckets[gpus:]:
            for node in bucket:
                if fits(node):
                    return node
        return None


class Default(BestFit):
    """Fewest blocks first, then the tightest domain; slices go to the fullest node that fits,
    and a slice that needs an idle node takes it from the block with the fewest idle nodes.
    A gang with a fixed window goes where bookings hug it best in time (``timefit``)."""

    name = "default"
    time_aware = True

    def select_domain(
        self, candidates: Sequence[tuple[str, int]], need: int, spread: Spread
    ) -> str | None:
        if len(candidates) <= 1:
            return candidates[0][0] if candidates else None
        best: tuple[int, int] | None = None
        choice: str | None = None
        for name, avail in sorted(candidates, key=lambda c: c[1]):
            key = (spread(name), avail)
            if best is None or key < best:
                best, choice = key, name
                if key[0] <= spread.floor:
                    break  # nothing spans fewer, and candidates come tightest first
        return choice

    def pick_slice_node(
        self, cand: SliceCandidates, gpus: int, fits: Fits, idle_nodes: IdleNodes
    ) -> str | None:
        top = len(cand.buckets) - 1
        for bucket in cand.buckets[gpus:top]:
            for node in bucket:
                if fits(node):
                    return node
        for node in idle_nodes():
            if fits(node):
                return node
        return super().pick_slice_node(cand, gpus, fits, idle_nodes)


class Fgd(Default):
    """Fragmentation gradient descent (Weng et al., ATC'23) for whole GPUs: a node's
    fragmentation is the expected number of its free GPUs that the next task cannot use,
    over a target mix of task sizes; a slice goes where that grows least (then best fit).
    Gangs are placed as by ``default``."""

    name = "fgd"

    def __init__(self, mix: dict[int, float] | None = None) -> None:
        self.mix = mix or {1: 0.3, 2: 0.2, 4: 0.2, 8: 0.3}

    def frag(self, free: int) -> float:
        return sum(p * free for size, p in self.mix.items() if free < size)

    def pick_slice_node(
        self, cand: SliceCandidates, gpus: int, fits: Fits, idle_nodes: IdleNodes
    ) -> str | None:
        top = len(cand.buckets) - 1
        order = sorted(range(gpus, top + 1), key=lambda f: (self.frag(f - gpus) - self.frag(f), f))
        for free in order:
            nodes: Iterable[str] = idle_nodes() if free == top else cand.buckets[free]
            for node in nodes:
                if fits(node):
                    return node
        return BestFit.pick_slice_node(self, cand, gpus, fits, idle_nodes)


POLICIES: dict[str, Callable[[int], PlacementPolicy]] = {
    "first_fit": lambda seed: FirstFit(),
    "random": lambda seed: RandomFit(seed),
    "best_fit": lambda seed: BestFit(),
    "default": lambda seed: Default(),
    "fgd": lambda seed: Fgd(),
}


def get_policy(name: str, *, seed: int = 0) -> PlacementPolicy:
    """The registered policy called ``name``; an unknown name raises ``UnknownPolicy``."""
    factory = POLICIES.get(name)
    if factory is None:
        known = ", ".join(sorted(POLICIES))
        raise UnknownPolicy(
            f"unknown placement policy {name!r}; known policies: {known}",
            param="policy",
            details={"policy": name, "known": sorted(POLICIES)},
        )
    return factory(seed)
