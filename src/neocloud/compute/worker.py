"""The background worker: while it holds the ``scheduler`` leader lease it schedules and
reconciles, then sleeps briefly; the API wakes it early after a write (``nudge``).

Tests call ``run_once()`` step by step on a virtual clock; ``neocloud up`` and ``neocloud worker``
run ``start()``, with a listener on ``WAKE_CHANNEL`` (``db.notify``) calling ``nudge`` when
another process's API wrote.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Histogram

from neocloud.compute.burn_in import AgentBurnIn, run_burn_in
from neocloud.compute.config import ComputeConfig, ScheduleReport
from neocloud.compute.reconciler import Reconciler, evict_drained
from neocloud.compute.reservations import reconcile_reservations
from neocloud.compute.scheduler import schedule
from neocloud.compute.slurm import SlurmSteps
from neocloud.db.engine import Database
from neocloud.db.lease import LeaderLease
from neocloud.drivers.base import Driver, Drivers
from neocloud.fleet.agent import run_agent_steps
from neocloud.kernel.clock import Clock
from neocloud.kernel.secrets import SecretBox

log = logging.getLogger(__name__)
LEASE_NAME = "scheduler"
WAKE_CHANNEL = "neocloud_compute"  # API writes that need scheduling wake workers on it
# Observed by the process holding the lease; /metrics (api.prometheus) exposes it.
CYCLE_SECONDS = Histogram(
    "neocloud_scheduler_cycle_seconds",
    "Seconds per compute worker cycle (reservations, burn-in, agents, schedule, reconcile).",
    registry=None,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


class CycleStep(Protocol):
    """A step another context runs in each of the leader's cycles (storage's reconciler):
    cheap to call, it starts what is due and answers how many."""

    def run_once(self) -> int: ...


@dataclass
class CycleReport:
    leader: bool
    schedule: ScheduleReport | None = None
    reconciled: int = 0
    burned_in: int = 0  # burn-in steps taken (started, passed, failed)

    @property
    def progressed(self) -> bool:
        """Whether the cycle changed anything (another cycle at the same instant may too)."""
        r = self.schedule
        moved = r is not None and bool(r.placed or r.failed or r.preempted)
        return moved or self.reconciled > 0 or self.burned_in > 0


class Worker:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        driver: Driver | Drivers,
        config: ComputeConfig | None = None,
        holder: str | None = None,
        lease_ttl_s: float = 15.0,
        interval_s: float = 1.0,
        box: SecretBox | None = None,
        steps: Sequence[CycleStep] = (),
    ) -> None:
        self.db, self.clock = db, clock
        # Other contexts' steps run under this lease each cycle (managed databases); each
        # answers how many it started, and keeps slow work in threads of its own.
        self.steps = tuple(steps)
        self.drivers = Drivers.of(driver)  # chosen per node (``NodeRef.driver``)
        self.config = config or ComputeConfig()
        url = self.config.agent_control_plane_url
        self.agent_burn_in = (
            None if url is None else AgentBurnIn(url, self.config.agent_report_timeout_s)
        )
        holder = holder or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.lease = LeaderLease(db, clock, name=LEASE_NAME, holder=holder, ttl_s=lease_ttl_s)
        self.reconciler = Reconciler(db, clock, self.drivers, lease_ttl_s=self.config.lease_ttl_s)
        # managed Slurm on clusters; ``box`` seals their munge keys (the platform's secret box)
        self.slurm = SlurmSteps(db, clock, self.drivers, box=box)
        self.interval_s = interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> CycleReport:
        """One cycle: acquire (or renew) the lease; if ours, schedule then reconcile."""
        if not self.lease.acquire():
            return CycleReport(leader=False)
        started = time.perf_counter()
        reconcile_reservations(db=self.db, clock=self.clock, config=self.config)
        burned_in = 0
        if self.config.burn_in:
            b = run_burn_in(
                db=self.db, clock=self.clock, driver=self.drivers, agent=self.agent_burn_in
            )
            burned_in = len(b.started) + len(b.passed) + len(b.failed)
        run_agent_steps(  # silent agents' nodes fail (compute heals below); old telemetry goes
            db=self.db,
            clock=self.clock,
            silence_s=self.config.agent_silence_s,
            retention_s=self.config.agent_retention_s,
        )
        evict_drained(db=self.db, clock=self.clock, notice_s=self.config.preemption_notice_s)
        report = schedule(db=self.db, clock=self.clock, config=self.config)
        reconciled = self.reconciler.run_once()  # passes until nothing more is due now
        reconciled += self.slurm.run_once()  # configure / remove Slurm, in its own threads
        for step in self.steps:
            reconciled += step.run_once()
        CYCLE_SECONDS.observe(time.perf_counter() - started)
        return CycleReport(True, report, reconciled, burned_in)

    def nudge(self) -> None:
        """Wake the loop now (called by the API after a write)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # keep serving; the next cycle retries from the database
                log.exception("compute worker cycle failed")
            self._wake.wait(self.interval_s)
            self._wake.clear()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="compute-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        try:
            self.lease.release()
        except Exception:
            log.exception("could not release the scheduler lease")
