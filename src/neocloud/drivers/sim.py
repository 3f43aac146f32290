"""The simulated driver: every step takes a configured time and fails with a configured
probability, deterministically under a seed (the same seed, node and workload give the same
outcome in every run and every process)."""

from __future__ import annotations

import hashlib
import random
from collections import deque
from dataclasses import dataclass, field

from neocloud.drivers.base import HealthResult, NodeRef, StepResult
from neocloud.kernel.settings import Settings

DEFAULT_DELAYS: dict[str, float] = {
    "provision": 0.0,
    "deprovision": 0.0,
    "wipe": 0.0,
    "power": 0.0,
}


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

    def provision(
        self, node: NodeRef, *, workload_id: str, gpu_indices: tuple[int, ...], image: str | None
    ) -> StepResult:
        return self._roll("provision", node, workload_id)

    def deprovision(self, node: NodeRef, *, workload_id: str) -> StepResult:
        return self._roll("deprovision", node, workload_id)

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
