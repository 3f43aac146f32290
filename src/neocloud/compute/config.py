"""Compute's knobs and the scheduler's report of one cycle: plain data that the scheduler, the
gang placer, reservations, the worker, the API and the simulator share."""

from __future__ import annotations

from dataclasses import dataclass, field

from neocloud.kernel.settings import Settings


@dataclass(frozen=True)
class ComputeConfig:
    """Knobs of the scheduler and reconciler (seconds); ``from_settings`` reads the
    ``NEOCLOUD_COMPUTE_*`` settings."""

    preemption_notice_s: float = 30.0
    policy: str = "default"
    lease_ttl_s: float = 30.0
    # A reservation may be cancelled until this long before its start; None: never.
    cancel_cutoff_s: float | None = 0.0
    # New and repaired nodes pass the driver's health check before they take work.
    burn_in: bool = True
    # The node agent: a node silent this long after a heartbeat fails; series rows older than
    # the retention are pruned (``fleet.agent``).
    agent_silence_s: float = 60.0
    agent_retention_s: float = 24 * 3600.0
    # Burn-in installs the agent where the driver can (``NEOCLOUD_AGENT_INSTALL``), pointed at
    # this URL, and waits this long for its first heartbeat; None: no agent at burn-in.
    agent_control_plane_url: str | None = None
    agent_report_timeout_s: float = 120.0
    # Reservations: ``fcfs`` sells every block that fits; ``bid_price`` declines one worth less
    # than the demand expected for its hours (``placement.admission``), once the forecast has
    # seen ``admission_min_requests`` requests start in the last ``admission_window_s``.
    admission_policy: str = "fcfs"
    admission_min_requests: int = 20
    admission_window_s: float = 3 * 86_400.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ComputeConfig:
        return cls(
            preemption_notice_s=settings.compute_preemption_notice_s,
            cancel_cutoff_s=settings.compute_reservation_cancel_cutoff_h * 3600
            if settings.compute_reservations_cancellable
            else None,
            burn_in=settings.compute_burn_in,
            agent_silence_s=settings.agent_silence_s,
            agent_retention_s=settings.agent_retention_h * 3600,
            agent_control_plane_url=None
            if settings.agent_install == "off"
            else settings.resolved_public_url(),
            agent_report_timeout_s=settings.agent_report_timeout_s,
            admission_policy=settings.compute_admission_policy,
        )


@dataclass
class ScheduleReport:
    placed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # queued: pending until capacity frees
    preempted: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
