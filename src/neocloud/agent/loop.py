"""The agent's loop: one heartbeat per interval, active checks when the node is idle.

Each cycle reads the inventory and a telemetry sample, and posts a heartbeat. The inventory
goes with a heartbeat on start, whenever it differs from the last one the control plane took
(a GPU fell off, the driver was upgraded), and once an hour anyway (``inventory_every_s``), so
that a control plane restored from a backup learns it again; a heartbeat that failed sends it
again. The answer's ``interval_s`` sets the next wait. When the answer says
``run_active_checks`` and the last checks are older than ``check_every_s`` (an hour by
default), the agent runs them at once and posts their results in a heartbeat of their own.

A heartbeat that fails (unreachable, 5xx, a refused token) is retried after a backoff:
exponential from 1 s, capped at 60 s, with jitter (each wait is drawn between half and all of
the step), and never shorter than a ``Retry-After`` the server gave. ``stop`` (SIGTERM) ends
the wait at once; the loop returns after the heartbeat in flight.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from neocloud import __version__
from neocloud.agent.gpus import GpuSource, Inventory, ReopeningSource
from neocloud.agent.transport import ControlPlane, ControlPlaneError
from neocloud.agent.wire import Answer, CheckResult, heartbeat_payload
from neocloud.kernel.clock import SystemClock

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 10.0
CHECK_EVERY_S = 3600.0
INVENTORY_EVERY_S = 3600.0


class Clock(Protocol):
    """Anything with ``now()`` in UTC: the kernel's clocks fit."""

    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


@dataclass
class Backoff:
    """Waits after consecutive failures: ``base_s · 2^(n-1)`` capped at ``cap_s``, each drawn
    uniformly between half and all of that (jitter, so that a fleet of agents does not come
    back in step after the control plane was down)."""

    base_s: float = 1.0
    cap_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, failures: int, *, at_least_s: float | None = None) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (≥ 1)."""
        step = min(self.cap_s, self.base_s * 2.0 ** max(0, min(failures - 1, 30)))
        wait = step * (0.5 + 0.5 * self.rng.random())
        return max(wait, at_least_s or 0.0)


def _changes(before: Inventory | None, after: Inventory) -> str:
    if before is None:
        return f"{len(after.gpus)} GPUs"
    return (
        f"{len(before.gpus)} → {len(after.gpus)} GPUs, driver {before.driver_version} → "
        f"{after.driver_version}"
    )


class Agent:
    """One node's agent. ``checks`` runs the active checks (``checks.run_active_checks``);
    ``interval_s`` is the wait between heartbeats until an answer sets it (the answer's
    ``interval_s`` wins); ``wait(seconds)`` sleeps and answers True when the agent should
    stop; ``monotonic`` is the timer for the hourly work (both injected so that tests run
    without sleeping)."""

    def __init__(
        self,
        *,
        node_id: str,
        source: GpuSource,
        control_plane: ControlPlane,
        checks: Callable[[], list[CheckResult]],
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        check_every_s: float = CHECK_EVERY_S,
        inventory_every_s: float = INVENTORY_EVERY_S,
        wait: Callable[[float], bool] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_id = node_id
        self.source = source
        self.control_plane = control_plane
        self.checks = checks
        self.clock: Clock = clock or SystemClock()
        self.backoff = backoff or Backoff()
        self.interval_s = interval_s
        self.check_every_s = check_every_s
        self.inventory_every_s = inventory_every_s
        self.stop_event = threading.Event()
        self.wait = wait or self.stop_event.wait
        self.monotonic = monotonic
        self.sent_inventory: Inventory | None = None
        self.inventory_sent_at: float | None = None
        self.pending_checks: list[CheckResult] = []
        self.checks_at: float | None = None
        self.heartbeats = 0

    def stop(self) -> None:
        """Ask the loop to end (a signal handler may call this)."""
        self.stop_event.set()

    def beat(self) -> Answer:
        """Post one heartbeat: a telemetry sample, the inventory when it is due, the check
        results not yet taken. Raises ``ControlPlaneError`` when it was not taken."""
        inventory = self.source.inventory()
        now = self.monotonic()
        due = (
            inventory != self.sent_inventory
            or self.inventory_sent_at is None
            or now - self.inventory_sent_at >= self.inventory_every_s
        )
        if inventory != self.sent_inventory:
            log.info("inventory: %s", _changes(self.sent_inventory, inventory))
        payload = heartbeat_payload(
            node_id=self.node_id,
            agent_version=__version__,
            simulated=self.source.simulated,
            sent_at=self.clock.now(),
            inventory=inventory if due else None,
            samples=self.source.sample(),
            checks=self.pending_checks + self._source_problems(),
        )
        answer = self.control_plane.heartbeat(payload)
        self.heartbeats += 1
        if due:
            self.sent_inventory, self.inventory_sent_at = inventory, now
        self.pending_checks = []
        return answer

    def _source_problems(self) -> list[CheckResult]:
        problem = self.source.problem if isinstance(self.source, ReopeningSource) else None
        return [CheckResult("nvml", "fail", problem)] if problem else []

    def _checks_due(self, answer: Answer) -> bool:
        if not answer.run_active_checks:
            return False
        return self.checks_at is None or self.monotonic() - self.checks_at >= self.check_every_s

    def cycle(self) -> float:
        """One heartbeat (and the active checks when due); the seconds until the next."""
        answer = self.beat()
        if self._checks_due(answer):
            log.info(
                "node %s is idle (%s): running the active checks", self.node_id, answer.node_state
            )
            self.pending_checks = self.checks()
            self.checks_at = self.monotonic()
            answer = self.beat()
        if answer.interval_s is not None:
            self.interval_s = answer.interval_s
        return self.interval_s

    def run(self, *, once: bool = False) -> int:
        """Heartbeat until stopped (0), or once (0 when the control plane took it, else 1)."""
        failures = 0
        while not self.stop_event.is_set():
            try:
                delay = self.cycle()
                if failures:
                    log.info("heartbeat taken again after %d failures", failures)
                failures = 0
            except ControlPlaneError as exc:
                failures += 1
                delay = self.backoff.delay(failures, at_least_s=exc.retry_after_s)
                log.warning(
                    "heartbeat failed (%d in a row): %s; next try in %.1f s", failures, exc, delay
                )
                if once:
                    return 1
            if once or self.wait(delay):
                break
        return 0
