"""The simulated driver: every step takes a configured time and fails with a configured
probability, deterministically under a seed (the same seed, node and workload give the same
outcome in every run and every process)."""

from __future__ import annotations

import hashlib
import ipaddress
import random
from collections import deque
from dataclasses import dataclass, field

from neocloud.drivers.base import Access, HealthResult, NodeRef, ProvisionRequest, StepResult
from neocloud.kernel.settings import Settings

DEFAULT_DELAYS: dict[str, float] = {
    "provision": 0.0,
    "deprovision": 0.0,
    "wipe": 0.0,
    "power": 0.0,
    "reboot": 0.0,
}
# Simulated nodes answer addresses from IPv6's documentation prefix (RFC 3849), which no packet
# reaches: wide enough for a 250,000-GPU fleet, and never mistaken for a real server's.
SIMULATED_PREFIX = ipaddress.IPv6Network("2001:db8::/32")


def simulated_address(node_id: str) -> str:
    """A stable documentation-range address for a simulated node."""
    digest = int.from_bytes(hashlib.sha256(node_id.encode()).digest()[:8], "big")
    return str(SIMULATED_PREFIX.network_address + digest)


@dataclass
class SimDriver:
    """``delays``: seconds per step (provision, deprovision, wipe, power);
    ``failure_probability``: per step (or per step name), in [0, 1]."""

    delays: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_DELAYS))
    failure_probability: float | dict[str, float] = 0.0
    seed: int = 0
    # The latest steps asked for (tests read them); bounded so a long run does not grow.
    calls: deque[tuple[str, str, str]] = field(default_factory=lambda: deque(maxlen=10_000))
    wipes: int = 0
    health_checks: int = 0

    @classmethod
    def from_settings(cls, settings: Settings, *, seed: int | None = None) -> SimDriver:
        """The driver ``NEOCLOUD_SIM_*`` describes (per-step delays, failure probability,
        seed; ``seed`` overrides the setting)."""
        return cls(
            delays={
                "provision": settings.sim_provision_s,
                "deprovision": settings.sim_deprovision_s,
                "wipe": settings.sim_wipe_s,
                "power": settings.sim_power_s,
            },
            failure_probability=settings.sim_failure_probability,
            seed=settings.sim_seed if seed is None else seed,
        )

    def _roll(self, step: str, node: NodeRef, key: str) -> StepResult:
        self.calls.append((step, node.id, key))
        p = self.failure_probability
        prob = p.get(step, 0.0) if isinstance(p, dict) else p
        digest = hashlib.sha256(f"{self.seed}:{step}:{node.id}:{key}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        ok = rng.random() >= prob
        message = None if ok else f"simulated {step} failure on {node.hostname}"
        return StepResult(ok, float(self.delays.get(step, 0.0)), message)

    @property
    def shares_nodes(self) -> bool:
        return True

    def provision(self, node: NodeRef, request: ProvisionRequest) -> StepResult:
        result = self._roll("provision", node, request.workload_id)
        if not result.ok:
            return result
        address = simulated_address(node.id)
        access = Access(address, 22, request.login.user, (address,), simulated=True)
        return StepResult(True, result.duration_s, access=access)

    def deprovision(self, node: NodeRef, *, workload_id: str, login_user: str) -> StepResult:
        return self._roll("deprovision", node, workload_id)

    def reboot(self, node: NodeRef, *, workload_id: str) -> StepResult:
        return self._roll("reboot", node, workload_id)

    def wipe(self, node: NodeRef) -> StepResult:
        self.wipes += 1
        return self._roll("wipe", node, str(self.wipes))

    def power(self, node: NodeRef, *, on: bool) -> StepResult:
        return self._roll("power", node, "on" if on else "off")

    def health(self, node: NodeRef) -> HealthResult:
        """A burn-in check: fails with the ``health`` step's probability (or the global one)."""
        self.health_checks += 1
        step = self._roll("health", node, str(self.health_checks))
        if step.ok:
            return HealthResult(True, {"sim": "pass"})
        return HealthResult(False, {"sim": "fail"}, step.message)

    def run_root(
        self, node: NodeRef, script: str, *, timeout_s: float, stdin: bytes | None = None
    ) -> tuple[int, str]:
        """Simulated: nothing runs (a simulated node has no OS); answers success with no
        output, so what is configured through it says it is simulated."""
        self.calls.append(("run_root", node.id, ""))
        return 0, ""
