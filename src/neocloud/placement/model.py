"""Plain data that goes in and out of placement.

Times are seconds (``float``) on whatever epoch the caller uses; placement never reads a clock,
every decision is handed ``now``. An ``end`` of ``None`` means open-ended. Intervals are
half-open: a booking ``[start, end)`` frees its resources at ``end``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

DEFAULT_LEVELS: tuple[str, ...] = ("region", "zone", "fabric", "block", "rack")
INF = float("inf")


class BookingClass(StrEnum):
    reserved = "reserved"
    on_demand = "on_demand"
    spot = "spot"

    @property
    def preemptible(self) -> bool:
        return self is BookingClass.spot


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """One node as placement sees it.

    ``path`` holds the node's domain name at each topology level (names are unique per level);
    ``eligible`` folds state, health and cordon into one yes/no; ``whole_only``: the node is
    never shared between workloads (bare metal), so a single-node request lands on it only
    when it asks for all of its GPUs, and never a fraction.
    """

    id: str
    gpu_model: str
    gpu_count: int
    vcpus: int
    ram_gib: int
    path: tuple[str, ...]
    eligible: bool = True
    whole_only: bool = False


@dataclass(frozen=True, slots=True)
class Resources:
    """Whole GPUs, vCPUs and GiB of RAM (integers, so release restores capacity exactly)."""

    gpus: int = 0
    vcpus: int = 0
    ram_gib: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.gpus + other.gpus, self.vcpus + other.vcpus, self.ram_gib + other.ram_gib
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            self.gpus - other.gpus, self.vcpus - other.vcpus, self.ram_gib - other.ram_gib
        )

    def fits_in(self, other: Resources) -> bool:
        return (
            self.gpus <= other.gpus and self.vcpus <= other.vcpus and self.ram_gib <= other.ram_gib
        )


@dataclass(frozen=True, slots=True)
class Booking:
    """Resources of one node held by an owner for ``[start, end)`` in one capacity class.

    ``allocation_id`` groups the bookings of one placement (the nodes of a gang). A fractional
    booking has ``gpus`` 0 and ``milli_gpu`` (1-999) of the node's shared GPU ``gpu_index``: a
    label, not a device number. While any fraction on a label is running, that label holds one
    whole GPU of the node; fractions on one label share it up to 1,000 milli-GPU.
    """

    id: str
    node_id: str
    start: float
    end: float | None
    cls: BookingClass
    owner: str
    priority: int
    gpus: int
    vcpus: int
    ram_gib: int
    allocation_id: str = ""
    milli_gpu: int = 0
    gpu_index: int | None = None

    @property
    def resources(self) -> Resources:
        return Resources(self.gpus, self.vcpus, self.ram_gib)

    def overlaps(self, start: float, end: float | None) -> bool:
        """Whether ``[start, end)`` intersects this booking."""
        mine = INF if self.end is None else self.end
        theirs = INF if end is None else end
        return self.start < theirs and start < mine


@dataclass(frozen=True, slots=True)
class SliceRequest:
    """Part of one node: whole GPUs (0-8) or a fraction of one GPU in milli-GPUs, plus CPU/RAM.

    ``start`` ``None`` means now; ``end`` ``None`` means open-ended.
    """

    id: str = ""
    gpus: int = 0
    milli_gpu: int = 0
    vcpus: int = 0
    ram_gib: int = 0
    gpu_model: str | None = None
    start: float | None = None
    end: float | None = None
    cls: BookingClass = BookingClass.on_demand
    priority: int = 0
    owner: str = ""


@dataclass(frozen=True, slots=True)
class GangRequest:
    """N whole nodes of one GPU model, all or nothing.

    ``required_level`` is a hard constraint (all nodes in one domain of that level);
    ``preferred_level`` is where the count of domains used is minimised (fewest blocks);
    ``segment`` splits the gang into groups of that many nodes, each inside one domain of
    ``segment_level``; ``fabric`` pins the domain at the required level.
    """

    gpu_model: str
    node_count: int
    id: str = ""
    required_level: str = "fabric"
    preferred_level: str | None = "block"
    segment: int | None = None
    segment_level: str = "block"
    fabric: str | None = None
    start: float | None = None
    end: float | None = None
    cls: BookingClass = BookingClass.on_demand
    priority: int = 0
    owner: str = ""


@dataclass(frozen=True, slots=True)
class OfferingRequest:
    """A reservation being shopped for: N nodes for ``duration`` s, starting in a range."""

    gpu_model: str
    node_count: int
    duration: float
    earliest_start: float | None = None
    latest_start: float | None = None
    required_level: str = "fabric"
    preferred_level: str | None = "block"
    fabric: str | None = None
    k: int = 5


Request = SliceRequest | GangRequest


@dataclass(frozen=True, slots=True)
class Placement:
    """A decision that bound resources: the bookings made, where, and what it cost.

    ``truncated`` lists spot bookings whose end was pulled in to this placement's start (the
    caller must preempt them then); ``domain`` is the chosen domain at the required level.
    """

    allocation_id: str
    bookings: tuple[Booking, ...]
    start: float
    end: float | None
    domain: str | None = None
    domains_used: dict[str, int] = field(default_factory=dict)
    truncated: tuple[Booking, ...] = ()
    preempted: tuple[Booking, ...] = ()

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(b.node_id for b in self.bookings)


@dataclass(frozen=True, slots=True)
class NoCapacity:
    """A precise no: ``code`` for machines, ``reason`` for people, ``details`` with the numbers,
    and the earliest start within the horizon at which the request would fit (if known)."""

    reason: str
    code: str = "no_capacity"
    details: dict[str, Any] = field(default_factory=dict)
    earliest_start: float | None = None


@dataclass(frozen=True, slots=True)
class Offering:
    """One way to satisfy a reservation request: a window, a fabric and the nodes."""

    start: float
    end: float
    domain: str
    node_ids: tuple[str, ...]
    domains_used: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Preemption:
    """The spot bookings whose removal makes a request feasible (a what-if: nothing moved)."""

    victims: tuple[Booking, ...]
    gpu_hours_lost: float
    node_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Replacement:
    """A substitute node for a failed member of an allocation, and where it was found."""

    allocation_id: str
    failed_node_id: str
    booking: Booking
    level: str
    domain: str
