"""The provisioning port: what the reconciler asks of the hardware, whatever drives it.

A step answers at once with a ``StepResult``: whether it was accepted and how many seconds it
takes to complete. The reconciler records the due time and checks back; it never sleeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class NodeRef:
    """The node a step acts on (the driver needs no database)."""

    id: str
    hostname: str
    gpu_model: str
    bmc: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StepResult:
    ok: bool
    duration_s: float = 0.0
    message: str | None = None


@dataclass(frozen=True, slots=True)
class HealthResult:
    ok: bool
    checks: dict[str, str] = field(default_factory=dict)
    message: str | None = None


class Driver(Protocol):
    """Provision and deprovision workloads, wipe, power and check nodes."""

    def provision(
        self, node: NodeRef, *, workload_id: str, gpu_indices: tuple[int, ...], image: str | None
    ) -> StepResult:
        """Start a workload (an instance, or one node of a cluster) on ``gpu_indices``."""
        ...

    def deprovision(self, node: NodeRef, *, workload_id: str) -> StepResult:
        """Stop a workload and release its GPUs."""
        ...

    def wipe(self, node: NodeRef) -> StepResult:
        """Clean the node between tenants (disks, GPU memory, firmware check)."""
        ...

    def power(self, node: NodeRef, *, on: bool) -> StepResult: ...

    def health(self, node: NodeRef) -> HealthResult: ...
