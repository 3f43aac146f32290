"""The fleet's ``NodeConsole`` port on the platform's drivers: an operator's power switch and
inventory read, run through whichever driver a node names (``redfish`` through its BMC,
``ssh`` over SSH, ``sim`` pretending and saying so)."""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

from neocloud.compute.reconciler import node_ref
from neocloud.drivers.base import Driver, Drivers, NodeRef, StepResult
from neocloud.fleet.node_control import Inventory, NodeStepFailed, PowerAction, PowerOutcome
from neocloud.fleet.tables import NodeRow

log = logging.getLogger(__name__)

# Drivers that switch a machine's power: the BMC's, and the simulator's pretend one. The ssh
# driver's ``power`` only answers that it cannot.
POWER_DRIVERS: frozenset[str] = frozenset({"sim", "redfish"})
# The driver errors whose message is written for operators (never a secret in it); any other
# exception is named by its type only, as its text may hold what the driver had in hand.
OPERATOR_MESSAGES: tuple[str, ...] = ("RedfishError", "SshStepError")


@runtime_checkable
class Resets(Protocol):
    def reset(self, node: NodeRef) -> StepResult: ...


@runtime_checkable
class Inspects(Protocol):
    def inspect(self, node: NodeRef) -> dict[str, Any]: ...


def _failure(node: NodeRow, what: str, exc: Exception) -> str:
    if type(exc).__name__ in OPERATOR_MESSAGES:
        return str(exc)
    return f"node {node.hostname}: {what} failed: {type(exc).__name__}"


class DriverConsole:
    """``fleet.node_control.NodeConsole`` on ``drivers`` (the API process's own, built with
    short timeouts: the operator waits for the answer)."""

    def __init__(self, drivers: Drivers) -> None:
        self.drivers = drivers

    def switches_power(self, driver: str) -> bool:
        return driver in POWER_DRIVERS

    def power(self, node: NodeRow, action: PowerAction) -> PowerOutcome:
        ref = node_ref(node)
        simulated = ref.driver == "sim"
        try:
            driver = self.drivers.for_node(ref)
            result = self._switch(driver, ref, action)
        except Exception as exc:  # an unknown driver or a driver's bug: a failed step
            log.warning("power %s on node %s: %s", action, node.hostname, type(exc).__name__)
            return PowerOutcome(False, message=_failure(node, f"power {action}", exc))
        return PowerOutcome(
            result.ok, result.duration_s, result.message, result.notes, simulated=simulated
        )

    @staticmethod
    def _switch(driver: Driver, ref: NodeRef, action: PowerAction) -> StepResult:
        if action != "reset":
            return driver.power(ref, on=action == "on")
        if isinstance(driver, Resets):
            return driver.reset(ref)
        off = driver.power(ref, on=False)  # a driver without a reset: off, then on
        if not off.ok:
            return off
        on = driver.power(ref, on=True)
        return StepResult(
            on.ok, off.duration_s + on.duration_s, on.message, notes=(*off.notes, *on.notes)
        )

    def inspect(self, node: NodeRow) -> Inventory:
        ref = node_ref(node)
        if ref.driver == "sim":
            return Inventory("declared", True, declared_facts(node))
        try:
            driver = self.drivers.for_node(ref)
            if not isinstance(driver, Inspects):
                return Inventory("declared", False, declared_facts(node))
            data = driver.inspect(ref)
        except Exception as exc:
            raise NodeStepFailed(_failure(node, "inspect", exc), code="inspect_failed") from None
        return Inventory("bmc" if ref.driver == "redfish" else ref.driver, False, data)


def declared_facts(node: NodeRow) -> dict[str, Any]:
    """What the node was registered as (no machine is asked)."""
    return {
        "hostname": node.hostname,
        "gpu_model": node.gpu_model,
        "gpu_count": node.gpu_count,
        "vcpus": node.vcpus,
        "ram_gib": node.ram_gib,
        "nvme_gib": node.nvme_gib,
    }
