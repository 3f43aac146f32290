"""Compute domain: instance, cluster and reservation lifecycles, instance types, prices. Pure.

Each lifecycle is one transitions table, described by a ``Lifecycle`` (``INSTANCE``,
``CLUSTER``, ``RESERVATION``); ``Lifecycle.go`` refuses an illegal move with an
``IllegalTransition`` naming the states that are allowed. Rows change state only through
``compute.lifecycle`` (one rule for reason, message and ``running_at``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Generic, TypeVar

from neocloud.fleet.catalog import CATALOG, GpuModel, find_gpu_model
from neocloud.kernel.errors import IllegalTransition, ValidationFailed
from neocloud.kernel.money import Money

StrEnumT = TypeVar("StrEnumT", bound=StrEnum)


class CapacityClass(StrEnum):
    RESERVED = "reserved"
    ON_DEMAND = "on_demand"
    SPOT = "spot"

    @property
    def rank(self) -> int:
        """Scheduling order: reserved first, then on-demand, then spot."""
        return _CLASS_RANK[self]


_CLASS_RANK = {CapacityClass.RESERVED: 0, CapacityClass.ON_DEMAND: 1, CapacityClass.SPOT: 2}
# Classes a tenant may ask for directly (reserved capacity comes with a reservation).
TENANT_CLASSES = (CapacityClass.ON_DEMAND, CapacityClass.SPOT)
QUOTA_CLASSES = frozenset({CapacityClass.ON_DEMAND, CapacityClass.SPOT})


class ReservationPolicy(StrEnum):
    AUTO = "auto"  # use a matching reservation of the org if one has room, else on-demand
    STRICT = "strict"  # only inside the named (or any matching) reservation
    FORBID = "forbid"  # never inside a reservation


class Reason(StrEnum):
    NO_CAPACITY = "no_capacity"
    QUOTA_EXCEEDED = "quota_exceeded"
    NODE_FAILED = "node_failed"
    RESERVATION_ENDED = "reservation_ended"
    PREEMPTED = "preempted"
    USER = "user"
    PROVISION_FAILED = "provision_failed"
    DEPROVISION_FAILED = "deprovision_failed"  # the tenant's login could not be removed
    MAINTENANCE = "maintenance"  # the operator drained the node


class InstanceState(StrEnum):
    PENDING = "pending"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    STOPPING = "stopping"
    TERMINATED = "terminated"
    FAILED = "failed"
    PREEMPTED = "preempted"


IS = InstanceState
INSTANCE_TRANSITIONS: dict[InstanceState, frozenset[InstanceState]] = {
    IS.PENDING: frozenset({IS.PROVISIONING, IS.FAILED, IS.TERMINATED}),
    IS.PROVISIONING: frozenset({IS.RUNNING, IS.STOPPING, IS.FAILED, IS.PREEMPTED}),
    IS.RUNNING: frozenset({IS.STOPPING, IS.FAILED, IS.PREEMPTED}),
    IS.STOPPING: frozenset({IS.TERMINATED, IS.FAILED, IS.PREEMPTED}),
    IS.TERMINATED: frozenset(),
    IS.FAILED: frozenset(),
    IS.PREEMPTED: frozenset(),
}
INSTANCE_FINAL = frozenset({IS.TERMINATED, IS.FAILED, IS.PREEMPTED})
# States that hold (or are about to hold) GPUs and so count against quota.
INSTANCE_LIVE = frozenset({IS.PENDING, IS.PROVISIONING, IS.RUNNING, IS.STOPPING})


class ClusterState(StrEnum):
    PENDING = "pending"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    DEGRADED = "degraded"
    STOPPING = "stopping"
    TERMINATED = "terminated"
    FAILED = "failed"
    PREEMPTED = "preempted"


C = ClusterState
CLUSTER_TRANSITIONS: dict[ClusterState, frozenset[ClusterState]] = {
    C.PENDING: frozenset({C.PROVISIONING, C.FAILED, C.TERMINATED}),
    C.PROVISIONING: frozenset({C.RUNNING, C.DEGRADED, C.STOPPING, C.FAILED, C.PREEMPTED}),
    C.RUNNING: frozenset({C.DEGRADED, C.STOPPING, C.FAILED, C.PREEMPTED}),
    C.DEGRADED: frozenset({C.RUNNING, C.STOPPING, C.FAILED, C.PREEMPTED}),
    C.STOPPING: frozenset({C.TERMINATED, C.FAILED}),
    C.TERMINATED: frozenset(),
    C.FAILED: frozenset(),
    C.PREEMPTED: frozenset(),
}
CLUSTER_FINAL = frozenset({C.TERMINATED, C.FAILED, C.PREEMPTED})


class ReservationState(StrEnum):
    SCHEDULED = "scheduled"
    ACTIVE = "active"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


R = ReservationState
RESERVATION_TRANSITIONS: dict[ReservationState, frozenset[ReservationState]] = {
    R.SCHEDULED: frozenset({R.ACTIVE, R.CANCELLED}),
    R.ACTIVE: frozenset({R.EXPIRED}),
    R.EXPIRED: frozenset(),
    R.CANCELLED: frozenset(),
}


@dataclass(frozen=True)
class Lifecycle(Generic[StrEnumT]):
    """One state machine: its allowed transitions, its final states, and the state whose first
    entry is the moment the object ran (None: it has no such moment)."""

    kind: str
    transitions: Mapping[StrEnumT, frozenset[StrEnumT]]
    final: frozenset[StrEnumT]
    running: StrEnumT | None = None

    def go(self, state: StrEnumT, target: StrEnumT, *, action: str | None = None) -> StrEnumT:
        """``target`` if the table allows ``state`` → ``target``, else ``IllegalTransition``
        naming the states that are allowed."""
        allowed = self.transitions[state]
        if target not in allowed:
            raise IllegalTransition(
                self.kind, state.value, target.value, [s.value for s in allowed], action=action
            )
        return target


INSTANCE = Lifecycle("instance", INSTANCE_TRANSITIONS, INSTANCE_FINAL, IS.RUNNING)
CLUSTER = Lifecycle("cluster", CLUSTER_TRANSITIONS, CLUSTER_FINAL, C.RUNNING)
RESERVATION = Lifecycle("reservation", RESERVATION_TRANSITIONS, frozenset({R.EXPIRED, R.CANCELLED}))


def transition_instance(state: str, target: InstanceState, *, action: str | None = None) -> str:
    return INSTANCE.go(InstanceState(state), target, action=action).value


def transition_cluster(state: str, target: ClusterState, *, action: str | None = None) -> str:
    return CLUSTER.go(ClusterState(state), target, action=action).value


def transition_reservation(
    state: str, target: ReservationState, *, action: str | None = None
) -> str:
    return RESERVATION.go(ReservationState(state), target, action=action).value


# --- the waiting queue ------------------------------------------------------------------

# A create that does not fit fails at once with ``no_capacity`` unless it asks to queue; then it
# stays ``pending`` until placed or until its wait runs out (then ``failed(no_capacity)``).
DEFAULT_QUEUE_WAIT_S = 24 * 3600
MAX_QUEUE_WAIT_S = 7 * 24 * 3600


def queue_deadline(queue: bool | None, max_wait_s: int | None, now: datetime) -> datetime | None:
    """Until when a request waits for capacity (None: it does not wait).

    ``max_wait_s`` alone implies ``queue``; ``queue: false`` with a wait is a contradiction.
    """
    if max_wait_s is None:
        return now + timedelta(seconds=DEFAULT_QUEUE_WAIT_S) if queue else None
    if queue is False:
        raise ValidationFailed(
            "max_wait_s is the time a queued request waits; it cannot be given with queue false",
            code="invalid_queue",
            param="max_wait_s",
        )
    if isinstance(max_wait_s, bool) or not 1 <= max_wait_s <= MAX_QUEUE_WAIT_S:
        raise ValidationFailed(
            f"max_wait_s must be between 1 and {MAX_QUEUE_WAIT_S} seconds (7 days)",
            code="invalid_queue",
            param="max_wait_s",
        )
    return now + timedelta(seconds=max_wait_s)


# --- instance types ------------------------------------------------------------------------

PRESET_GPUS = (1, 2, 4, 8)
VCPUS_PER_GPU = 16
RAM_GIB_PER_GPU = 128
NVME_GIB_PER_GPU = 900
# Spot costs this fraction of the on-demand price.
SPOT_DISCOUNT = Decimal("0.40")


@dataclass(frozen=True, slots=True)
class InstanceType:
    """A preset: ``gpus`` GPUs of one model with a vCPU/RAM/NVMe bundle (8: the whole node)."""

    name: str  # "8xH100"
    gpu_model: str  # catalog id
    gpus: int
    vcpus: int
    ram_gib: int
    nvme_gib: int
    whole_node: bool

    def price_per_hour(self, cls: CapacityClass) -> Money:
        model = find_gpu_model(self.gpu_model)
        assert model is not None
        return hourly_price(model, cls) * self.gpus


def hourly_price(model: GpuModel, cls: CapacityClass) -> Money:
    """Price of one GPU-hour of ``model`` in ``cls`` (spot at a discount; reserved as on-demand
    here: reservations are priced by their offering)."""
    base = model.list_price_per_gpu_hour
    if cls is CapacityClass.SPOT:
        return (base * (Decimal(1) - SPOT_DISCOUNT)).rounded()
    return base


def _short(model: GpuModel) -> str:
    return model.aliases[0] if model.aliases else model.id


def _types() -> tuple[InstanceType, ...]:
    out = []
    for model in CATALOG:
        for n in PRESET_GPUS:
            if n > model.max_gpus_per_node:
                continue
            out.append(
                InstanceType(
                    f"{n}x{_short(model)}",
                    model.id,
                    n,
                    n * VCPUS_PER_GPU,
                    n * RAM_GIB_PER_GPU,
                    n * NVME_GIB_PER_GPU,
                    n == model.max_gpus_per_node,
                )
            )
    return tuple(out)


INSTANCE_TYPES: tuple[InstanceType, ...] = _types()
_TYPES_BY_NAME = {t.name.upper(): t for t in INSTANCE_TYPES}


def resolve_instance_type(name: str, *, param: str = "instance_type") -> InstanceType:
    """The preset named ``name`` (``8xH100``, case-insensitive); 422 naming the known ones."""
    found = _TYPES_BY_NAME.get(name.strip().upper())
    if found is None:
        raise ValidationFailed(
            f"unknown instance type {name!r}; known types look like 8xH100 or 1xL40S",
            code="unknown_instance_type",
            param=param,
            details={"known": [t.name for t in INSTANCE_TYPES]},
        )
    return found


# --- advice ---------------------------------------------------------------------------------


class Advice(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    NONE = "none"


def advise(free_gpus: int, total_gpus: int) -> Advice:
    """Coarse availability for tenants: what share of the model's GPUs is free now."""
    if free_gpus <= 0 or total_gpus <= 0:
        return Advice.NONE
    share = free_gpus / total_gpus
    if share >= 0.25:
        return Advice.HIGH
    if share >= 0.05:
        return Advice.MEDIUM
    return Advice.LOW
