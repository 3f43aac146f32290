"""The node lifecycle and health rules: pure, no I/O.

One table (``TRANSITIONS``) says which state may follow which. Operator actions (cordon, drain,
uncordon, retire), health reports and the compute context's moves all go through it.

A cordon never disturbs a tenant: an idle node goes to ``cordoned`` at once; a busy one
(allocated, provisioning, in use) goes to ``draining`` (no new work) and keeps a *hold*, so that
when its workload is released and the node wiped it lands in ``cordoned``, not ``available``.
``drain`` does the same and also asks the compute context to evict the workload.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TypeVar

from neocloud.kernel.errors import IllegalTransition, ValidationFailed

E = TypeVar("E", bound=StrEnum)


class NodeState(StrEnum):
    ENROLLED = "enrolled"
    BURN_IN = "burn_in"
    AVAILABLE = "available"
    ALLOCATED = "allocated"
    PROVISIONING = "provisioning"
    IN_USE = "in_use"
    RELEASING = "releasing"
    WIPING = "wiping"
    CORDONED = "cordoned"
    DRAINING = "draining"
    MAINTENANCE = "maintenance"
    FAILED = "failed"
    REPAIR = "repair"
    RETIRED = "retired"


S = NodeState


class NodeRole(StrEnum):
    """What a node is for: ``gpu`` nodes are rented to tenants; ``storage`` (a storage pool's
    bricks) and ``service`` (managed services) nodes are the platform's own, have no GPUs and
    never enter placement."""

    GPU = "gpu"
    STORAGE = "storage"
    SERVICE = "service"


# How a node without GPUs stores its model (with ``gpu_count`` 0): not a catalog model, so no
# instance type, price or capacity line ever matches it.
NO_GPU_MODEL = "none"

# The one transitions table. Every non-retired state may also go to ``failed`` (added below).
TRANSITIONS: dict[NodeState, frozenset[NodeState]] = {
    S.ENROLLED: frozenset({S.BURN_IN, S.CORDONED, S.MAINTENANCE, S.RETIRED}),
    S.BURN_IN: frozenset({S.AVAILABLE, S.CORDONED, S.MAINTENANCE, S.RETIRED}),
    S.AVAILABLE: frozenset({S.ALLOCATED, S.CORDONED, S.MAINTENANCE, S.RETIRED}),
    S.ALLOCATED: frozenset({S.PROVISIONING, S.AVAILABLE, S.DRAINING}),
    S.PROVISIONING: frozenset({S.IN_USE, S.RELEASING, S.DRAINING}),
    S.IN_USE: frozenset({S.RELEASING, S.DRAINING}),
    S.RELEASING: frozenset({S.WIPING}),
    S.WIPING: frozenset({S.AVAILABLE, S.CORDONED}),
    S.CORDONED: frozenset({S.AVAILABLE, S.BURN_IN, S.MAINTENANCE, S.RETIRED}),
    # draining: the workload still runs; it ends (releasing), or an uncordon resumes it.
    S.DRAINING: frozenset({S.RELEASING, S.CORDONED, S.ALLOCATED, S.PROVISIONING, S.IN_USE}),
    S.MAINTENANCE: frozenset({S.AVAILABLE, S.CORDONED, S.BURN_IN, S.REPAIR, S.RETIRED}),
    S.FAILED: frozenset({S.REPAIR, S.RETIRED}),
    S.REPAIR: frozenset({S.BURN_IN, S.RETIRED}),
    S.RETIRED: frozenset(),
}
for _state in list(TRANSITIONS):
    if _state not in (S.RETIRED, S.FAILED):
        TRANSITIONS[_state] = TRANSITIONS[_state] | {S.FAILED}

BUSY: frozenset[NodeState] = frozenset({S.ALLOCATED, S.PROVISIONING, S.IN_USE})
# States the compute context drives (placing, provisioning, releasing and wiping workloads);
# operators do not set them by hand.
COMPUTE_DRIVEN: frozenset[NodeState] = frozenset(
    {S.ALLOCATED, S.PROVISIONING, S.IN_USE, S.RELEASING, S.WIPING}
)
# Targets an operator may pick by hand (``POST /nodes/{id}/transition``); draining comes from
# cordon/drain, enrolled only from an import.
OPERATOR_TARGETS: frozenset[NodeState] = (
    frozenset(NodeState)
    - COMPUTE_DRIVEN
    - {
        S.DRAINING,
        S.ENROLLED,
    }
)
# Idle states that a cordon turns into ``cordoned`` at once.
CORDONABLE_IDLE: frozenset[NodeState] = frozenset({S.ENROLLED, S.BURN_IN, S.AVAILABLE})
# States whose node takes no new work and that a cordon only marks with a hold.
HOLD_ONLY: frozenset[NodeState] = frozenset(
    {S.RELEASING, S.WIPING, S.MAINTENANCE, S.FAILED, S.REPAIR}
)


def transition(state: NodeState, target: NodeState, *, action: str | None = None) -> NodeState:
    """Return ``target`` if the table allows ``state → target``; raise ``IllegalTransition``."""
    if target not in TRANSITIONS[state]:
        raise IllegalTransition(
            "node", state.value, target.value, [s.value for s in TRANSITIONS[state]], action=action
        )
    return target


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """A node's lifecycle position: its state, and the operator's hold on it.

    ``hold``: the operator cordoned it; it must not return to ``available`` until uncordoned.
    ``drain``: the operator asked for the workload to be evicted.
    ``resume``: the busy state a ``draining`` node was in, restored by an uncordon.
    """

    state: NodeState
    hold: bool = False
    drain: bool = False
    resume: NodeState | None = None


@dataclass(frozen=True, slots=True)
class Move:
    before: NodeState
    after: NodeState


def _go(
    lc: Lifecycle, target: NodeState, moves: list[Move], action: str | None = None
) -> Lifecycle:
    new_state = transition(lc.state, target, action=action)
    moves.append(Move(lc.state, new_state))
    resume = lc.resume if new_state == S.DRAINING else None
    return replace(lc, state=new_state, resume=resume)


def settle(
    lc: Lifecycle, target: NodeState, *, action: str | None = None
) -> tuple[Lifecycle, list[Move]]:
    """Move to ``target``; a node under a hold that would become available lands in cordoned."""
    if target == S.AVAILABLE and lc.hold and lc.state != S.CORDONED:
        target = S.CORDONED
    moves: list[Move] = []
    new = _go(lc, target, moves, action)
    if new.state == S.AVAILABLE:
        new = replace(new, hold=False, drain=False)
    elif new.state not in BUSY and new.state != S.DRAINING:
        new = replace(new, drain=False)  # no workload left to evict
    return new, moves


def cordon(lc: Lifecycle, *, drain: bool = False) -> tuple[Lifecycle, list[Move]]:
    """Stop new work on the node without touching a running workload."""
    action = "drain the node" if drain else "cordon the node"
    moves: list[Move] = []
    if lc.state == S.RETIRED:
        raise IllegalTransition("node", lc.state.value, S.CORDONED.value, [], action=action)
    # Only a running workload can be evicted; elsewhere a drain is just a cordon.
    evict = drain and (lc.state in BUSY or lc.state == S.DRAINING)
    held = replace(lc, hold=True, drain=lc.drain or evict)
    if lc.state in CORDONABLE_IDLE:
        return replace(_go(held, S.CORDONED, moves, action), drain=False), moves
    if lc.state in BUSY:
        draining = _go(replace(held, resume=lc.state), S.DRAINING, moves, action)
        return draining, moves
    # cordoned, draining, or a state that takes no new work: the hold is all that changes.
    return held, moves


def uncordon(lc: Lifecycle) -> tuple[Lifecycle, list[Move]]:
    """Lift the hold: a cordoned node becomes available, a draining one resumes its work."""
    moves: list[Move] = []
    if lc.state == S.RETIRED:
        raise IllegalTransition("node", lc.state.value, S.AVAILABLE.value, [], action="uncordon")
    freed = replace(lc, hold=False, drain=False)
    if lc.state == S.CORDONED:
        return _go(freed, S.AVAILABLE, moves, "uncordon the node"), moves
    if lc.state == S.DRAINING:
        target = lc.resume or S.IN_USE
        return replace(_go(freed, target, moves, "uncordon the node"), resume=None), moves
    return freed, moves


def retire(lc: Lifecycle) -> tuple[Lifecycle, list[Move]]:
    moves: list[Move] = []
    new = _go(lc, S.RETIRED, moves, "retire the node")
    return replace(new, hold=False, drain=False, resume=None), moves


def fail(lc: Lifecycle) -> tuple[Lifecycle, list[Move]]:
    """Failed hardware leaves service from any state but retired (a no-op when already failed)."""
    if lc.state in (S.RETIRED, S.FAILED):
        return lc, []
    moves: list[Move] = []
    # The workload dies with the hardware: nothing is left to resume or evict.
    return replace(_go(lc, S.FAILED, moves), resume=None, drain=False), moves


# --- health -----------------------------------------------------------------------------------


class CheckStatus(StrEnum):
    PASS = "pass"  # noqa: S105 - a check result, not a password
    WARN = "warn"
    FAIL = "fail"


class Health(StrEnum):
    HEALTHY = "healthy"
    WARNING = "warning"
    FAILED = "failed"


_HEALTH_OF = {
    CheckStatus.PASS: Health.HEALTHY,
    CheckStatus.WARN: Health.WARNING,
    CheckStatus.FAIL: Health.FAILED,
}
_RANK = {Health.HEALTHY: 0, Health.WARNING: 1, Health.FAILED: 2}


def aggregate_health(latest: Iterable[CheckStatus | str]) -> Health:
    """The worst of the latest result of each check; no checks yet is healthy."""
    worst = Health.HEALTHY
    for status in latest:
        health = _HEALTH_OF[CheckStatus(status)]
        if _RANK[health] > _RANK[worst]:
            worst = health
    return worst


def parse_enum(kind: type[E], value: str, param: str) -> E:
    """``value`` as a member of ``kind`` (case-insensitive); a 422 naming the choices if not."""
    try:
        return kind(value.strip().lower())
    except ValueError:
        known = ", ".join(m.value for m in kind)
        raise ValidationFailed(f"{param} must be one of: {known}", param=param) from None
