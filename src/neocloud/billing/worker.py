"""The invoicing worker: on a timer, under a leader lease, the monthly run for last month.

``close_previous_month`` builds every org's draft for the month before now and finalizes each
once the grace period is over; it is idempotent, so running it every hour is safe and a crash
half-way is finished by the next tick (or by another process that takes the lease over). An org
whose invoice fails is skipped and logged, and the next tick tries it again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta
from decimal import ROUND_HALF_UP

from neocloud.billing.invoices import DEFAULT_GRACE, CloseResult, close_previous_month
from neocloud.db.engine import Database
from neocloud.db.lease import LeaderLease
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import Clock
from neocloud.kernel.settings import Settings

log = logging.getLogger(__name__)
LEASE_NAME = "billing-invoicing"
# The platform itself, acting as an operator admin (never an API key).
SYSTEM = Principal("key_system", "usr_system", "org_system", Role.OWNER, is_operator=True)


class InvoicingWorker:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        grace: timedelta = DEFAULT_GRACE,
        rounding: str = ROUND_HALF_UP,
        holder: str | None = None,
        lease_ttl_s: float = 15.0,
        interval_s: float = 3600.0,
    ) -> None:
        self.db, self.clock, self.grace, self.rounding = db, clock, grace, rounding
        holder = holder or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.lease = LeaderLease(db, clock, name=LEASE_NAME, holder=holder, ttl_s=lease_ttl_s)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, db: Database, clock: Clock, settings: Settings) -> InvoicingWorker:
        return cls(
            db,
            clock,
            grace=timedelta(days=settings.billing_grace_days),
            rounding=settings.billing_rounding,
            lease_ttl_s=settings.leader_lease_ttl_s,
        )

    def run_once(self) -> CloseResult | None:
        """Last month's run if this process holds the lease (None otherwise)."""
        if not self.lease.acquire():
            return None
        result = close_previous_month(
            db=self.db, clock=self.clock, principal=SYSTEM, grace=self.grace, rounding=self.rounding
        )
        if result.failed:  # each failure is logged with its reason where it happened
            log.error(
                "invoicing run for %s skipped %d org(s): %s",
                result.period,
                len(result.failed),
                ", ".join(f"{f.org_id} ({f.code})" for f in result.failed),
            )
        return result

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # the next tick starts again from the database
                log.exception("invoicing run failed")
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="invoicing", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        try:  # another process takes the monthly run over at once, not after the lease's TTL
            self.lease.release()
        except Exception:
            log.exception("could not release the invoicing lease")
