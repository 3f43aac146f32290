"""An operator's direct hold on one node: switch its power, read its inventory.

Both run the node's driver at once, from the API process, and answer with what the driver
said (``neocloud nodes power``, ``neocloud nodes inspect``). The fleet sits below the drivers,
so it declares what it needs of them as a port (``NodeConsole``); ``api`` plugs in the one
built on the platform's drivers. The rules are here: a retired node is not touched; a node
whose driver cannot switch power (``ssh``: the server has no BMC the platform knows) answers
``power_not_supported``; a node that holds a tenant's workload is not powered off or reset
unless the operator forces it, as the tenant would lose the machine without notice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from neocloud.db.engine import Database
from neocloud.fleet import service
from neocloud.fleet.domain import NodeState
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.errors import Conflict

PowerAction = Literal["on", "off", "reset"]
POWER_ACTIONS: tuple[PowerAction, ...] = ("on", "off", "reset")
# The states in which a tenant's workload is on the node (or about to be, or being cleared).
WORKLOAD_STATES: frozenset[str] = frozenset(
    s.value
    for s in (
        NodeState.ALLOCATED,
        NodeState.PROVISIONING,
        NodeState.IN_USE,
        NodeState.RELEASING,
        NodeState.WIPING,
        NodeState.DRAINING,
    )
)


@dataclass(frozen=True, slots=True)
class PowerOutcome:
    """What the driver answered: ``ok``, the seconds the change takes (``duration_s``; the
    driver accepted it, the machine gets there later), its message and notes."""

    ok: bool
    duration_s: float = 0.0
    message: str | None = None
    notes: tuple[str, ...] = ()
    simulated: bool = False


@dataclass(frozen=True, slots=True)
class Inventory:
    """The node as its driver sees it; ``simulated``: declared facts, no machine was asked."""

    source: str  # bmc (redfish), ssh, declared (sim)
    simulated: bool
    data: dict[str, Any] = field(default_factory=dict)


class NodeStepFailed(Conflict):
    """The driver reached out and the node (or its BMC) refused or did not answer; the message
    says why. A 409, not a 5xx: clients do not retry it on their own (a BMC locks its account
    after repeated failed logins)."""

    default_code = "node_step_failed"


class NodeConsole(Protocol):
    """What the fleet asks of the platform's drivers for one node."""

    def switches_power(self, driver: str) -> bool:
        """Whether nodes of ``driver`` can be powered on, off and reset."""
        ...

    def power(self, node: NodeRow, action: PowerAction) -> PowerOutcome:
        """Run the power step; a failure is ``ok=False`` with the driver's message."""
        ...

    def inspect(self, node: NodeRow) -> Inventory:
        """The node's inventory; ``NodeStepFailed`` when it cannot be read."""
        ...


@dataclass(frozen=True, slots=True)
class PowerResult:
    node: NodeRow
    action: PowerAction
    forced: bool
    outcome: PowerOutcome


def power_node(
    *, db: Database, console: NodeConsole, node_id: str, action: PowerAction, force: bool = False
) -> PowerResult:
    """Switch a node's power through its driver (see the module docstring for the refusals:
    ``node_retired``, ``power_not_supported``, ``node_in_use``; a driver's failure is
    ``NodeStepFailed`` with code ``power_failed``)."""
    node = service.get_node(db=db, node_id=node_id)
    driver = node.driver or "sim"
    if node.state == NodeState.RETIRED.value:
        raise Conflict(
            f"node {node.hostname} is retired: its power is no longer the platform's",
            code="node_retired",
            details={"state": node.state},
        )
    if not console.switches_power(driver):
        raise Conflict(
            f"node {node.hostname} runs the {driver} driver, which cannot switch power (no "
            "BMC is registered for it); register it with the redfish driver to power it",
            code="power_not_supported",
            details={"driver": driver},
        )
    busy = node.state in WORKLOAD_STATES and action != "on"
    if busy and not force:
        raise Conflict(
            f"node {node.hostname} is {node.state}: a tenant's workload is on it, and power "
            f"{action} would take the machine from under it; drain it first, or pass force",
            code="node_in_use",
            details={"state": node.state, "action": action},
        )
    outcome = console.power(node, action)
    if not outcome.ok:
        raise NodeStepFailed(
            outcome.message or f"node {node.hostname}: power {action} failed",
            code="power_failed",
            details={"action": action},
        )
    return PowerResult(node, action, busy, outcome)


def inspect_node(*, db: Database, console: NodeConsole, node_id: str) -> tuple[NodeRow, Inventory]:
    """The node's inventory through its driver (``NodeStepFailed``, code ``inspect_failed``,
    when the node or its BMC cannot be read)."""
    node = service.get_node(db=db, node_id=node_id)
    return node, console.inspect(node)
