"""Metering: one usage record per request, buffered in memory, flushed in batches.

The request path only appends to a bounded in-process buffer (no database write); a flusher
drains it into a ``UsageSink`` every ``interval_s`` or when ``batch_size`` records wait. Billing
will later drain the ``studio_usage`` table (or plug in its own sink).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from neocloud.db.engine import Database
from neocloud.kernel.ids import new_id
from neocloud.studio.tables import StudioUsageRow

log = logging.getLogger("neocloud.studio.metering")


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """Tokens one request used, as the engine counted them."""

    request_id: str
    org_id: str
    key_id: str
    model: str
    endpoint: str  # chat.completions | completions | embeddings
    prompt_tokens: int
    completion_tokens: int
    aborted: bool
    created_at: datetime


class UsageSink(Protocol):
    def write(self, records: list[UsageRecord]) -> None:
        """Persist a batch; raise to have the batch kept and retried."""
        ...


class MemoryUsageSink:
    def __init__(self) -> None:
        self.records: list[UsageRecord] = []

    def write(self, records: list[UsageRecord]) -> None:
        self.records.extend(records)


class DbUsageSink:
    """Writes a batch into ``studio_usage`` in one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def write(self, records: list[UsageRecord]) -> None:
        with self.db.transaction() as session:
            session.add_all(
                StudioUsageRow(
                    id=new_id("usg", at=r.created_at),
                    request_id=r.request_id,
                    org_id=r.org_id,
                    key_id=r.key_id,
                    model=r.model,
                    endpoint=r.endpoint,
                    prompt_tokens=r.prompt_tokens,
                    completion_tokens=r.completion_tokens,
                    aborted=r.aborted,
                    created_at=r.created_at,
                )
                for r in records
            )


class UsageBuffer:
    """A thread-safe buffer of usage records with a background flusher.

    ``record`` never blocks on I/O. If the sink fails, the batch goes back to the front of the
    buffer and is retried at the next flush; past ``max_pending`` the oldest records are dropped
    (and logged) rather than growing without bound.
    """

    def __init__(
        self,
        sink: UsageSink,
        *,
        batch_size: int = 500,
        interval_s: float = 1.0,
        max_pending: int = 1_000_000,
    ) -> None:
        self.sink = sink
        self.batch_size = batch_size
        self.interval_s = interval_s
        self._pending: deque[UsageRecord] = deque(maxlen=max_pending)
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, record: UsageRecord) -> None:
        with self._lock:
            if len(self._pending) == self._pending.maxlen:
                log.error("usage buffer full: dropping the oldest record")
            self._pending.append(record)
            if len(self._pending) >= self.batch_size:
                self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> int:
        """Drain everything pending into the sink, in batches; return how many were written."""
        written = 0
        with self._flush_lock:
            while True:
                with self._lock:
                    batch = [
                        self._pending.popleft()
                        for _ in range(min(self.batch_size, len(self._pending)))
                    ]
                if not batch:
                    return written
                try:
                    self.sink.write(batch)
                except Exception:
                    log.exception("usage flush failed; %d records kept for retry", len(batch))
                    with self._lock:
                        self._pending.extendleft(reversed(batch))
                    return written
                written += len(batch)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="studio-usage-flush", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the flusher and flush what is left."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            self.flush()
