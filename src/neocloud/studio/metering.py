"""Metering: one usage record per request, buffered in memory, flushed in batches.

The request path only appends to a bounded in-process buffer (no database write); a flusher
drains it into a ``UsageSink`` every ``interval_s`` or when ``batch_size`` records wait.

The platform's sink is ``BillingUsageSink``: each record becomes a billing ``tokens`` usage event
(source ``studio``, id = the request id), so token usage is rated onto the tenant's invoice, and
a row of ``studio_usage``, the studio's own per-request log (key, endpoint, aborted) that quota
checks and ``studio usage`` read. Both writes are idempotent on the request id, so a flush that
failed half-way is simply retried whole: nothing is counted twice.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sqlalchemy.dialects import postgresql, sqlite

from neocloud.billing.usage import MAX_BATCH, TOKENS, UsageEvent, record_usage_events
from neocloud.db.engine import Database
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import ValidationFailed
from neocloud.kernel.ids import random_id
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
    batch: bool = False  # a request of a batch: rated at the model's batch price


class UsageSink(Protocol):
    def write(self, records: list[UsageRecord]) -> None:
        """Persist a batch; raise to have the batch kept and retried."""
        ...


@runtime_checkable
class ClosableSink(UsageSink, Protocol):
    def close(self) -> None:
        """Release what the sink holds (a writer process), after the last write."""
        ...


class MemoryUsageSink:
    def __init__(self) -> None:
        self.records: list[UsageRecord] = []

    def write(self, records: list[UsageRecord]) -> None:
        self.records.extend(records)


SOURCE = "studio"


class RequestIds:
    """Request ids: ``<kind>-<24 hex digits>``, 96 random bits each (``kernel.ids.random_id``).
    They are billing's idempotency keys (the ``studio`` usage event of a request has its id), so
    they must be unguessable: a counter would let a caller pre-empt the ids of its next
    requests with events of its own."""

    def new(self, kind: str) -> str:
        return random_id(kind, sep="-")


request_ids = RequestIds()


def log_row_id(request_id: str) -> str:
    """The ``studio_usage`` id of a request: derived from it, so a replayed write is a no-op."""
    return "usg_" + hashlib.sha256(request_id.encode()).hexdigest()[:32]


def to_event(r: UsageRecord) -> UsageEvent:
    return UsageEvent(
        id=r.request_id,
        source=SOURCE,
        type=TOKENS,
        subject=r.key_id,
        time=r.created_at,
        data={
            "model": r.model,
            "input_tokens": r.prompt_tokens,
            "output_tokens": r.completion_tokens,
            "batch": r.batch,
            "endpoint": r.endpoint,
            "aborted": r.aborted,
        },
    )


class DbUsageSink:
    """Writes a batch into ``studio_usage`` in one transaction; replays are skipped."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def write(self, records: list[UsageRecord]) -> None:
        if not records:
            return
        rows: list[dict[str, Any]] = [
            {
                "id": log_row_id(r.request_id),
                "request_id": r.request_id,
                "org_id": r.org_id,
                "key_id": r.key_id,
                "model": r.model,
                "endpoint": r.endpoint,
                "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.completion_tokens,
                "aborted": r.aborted,
                "created_at": r.created_at,
            }
            for r in records
        ]
        insert = postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert
        with self.db.transaction() as session:
            session.execute(
                insert(StudioUsageRow).values(rows).on_conflict_do_nothing(index_elements=["id"])
            )


class BillingUsageSink:
    """Billing ``tokens`` events per org (in batches billing accepts), then the studio's log.

    A batch the billing service refuses for good (an event too late or malformed, which only a
    flush stuck for weeks produces) would block the buffer forever: the refused events are
    logged and dropped, and the rest of the batch is written.
    """

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self.request_log = DbUsageSink(db)

    def write(self, records: list[UsageRecord]) -> None:
        by_org: dict[str, list[UsageRecord]] = defaultdict(list)
        for r in records:
            by_org[r.org_id].append(r)
        kept: list[UsageRecord] = []
        for org_id, org_records in by_org.items():
            for start in range(0, len(org_records), MAX_BATCH):
                kept += self._bill(org_id, org_records[start : start + MAX_BATCH])
        self.request_log.write(kept)

    def _bill(self, org_id: str, records: Sequence[UsageRecord]) -> list[UsageRecord]:
        batch = list(records)
        while batch:
            try:
                record_usage_events(
                    db=self.db, clock=self.clock, org_id=org_id, events=[to_event(r) for r in batch]
                )
                return batch
            except ValidationFailed as exc:
                refused = {item["index"] for item in exc.details.get("rejected", ())}
                if not refused:
                    raise
                log.error(
                    "billing refused %d usage event(s) of %s for good; dropped: %s",
                    len(refused),
                    org_id,
                    exc.message,
                )
                batch = [r for i, r in enumerate(batch) if i not in refused]
        return batch


class Spool(Protocol):
    """Where records wait on disk until they are flushed (``spool.UsageSpool``): a port, so
    that the spool may import this module's ``UsageRecord`` without a cycle."""

    def append(self, record: UsageRecord) -> None: ...

    def seal(self) -> Path | None: ...

    def orphans(self) -> list[tuple[Path, list[UsageRecord]]]: ...

    def close(self) -> None: ...


class UsageBuffer:
    """A thread-safe buffer of usage records with a background flusher.

    ``record`` never blocks on the database. If the sink fails, the batch goes back to the
    front of the buffer and is retried at the next flush; past ``max_pending`` the oldest records
    are dropped (and logged) rather than growing without bound. With a ``spool`` (``spool.py``)
    every record is also appended to a file first, so that a killed process's unflushed usage
    is flushed by the next process started on the same directory.
    """

    def __init__(
        self,
        sink: UsageSink,
        *,
        batch_size: int = 500,
        interval_s: float = 1.0,
        max_pending: int = 1_000_000,
        spool: Spool | None = None,
    ) -> None:
        self.sink = sink
        self.spool = spool
        self._sealed: list[Path] = []  # spool segments whose records are all pending or flushed
        self.on_record: Callable[[UsageRecord], None] | None = None  # e.g. budget counting
        self.batch_size = batch_size
        self.interval_s = interval_s
        self._pending: deque[UsageRecord] = deque(maxlen=max_pending)
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, record: UsageRecord) -> None:
        if self.on_record is not None:
            self.on_record(record)
        with self._lock:
            if self.spool is not None:
                try:
                    self.spool.append(record)
                except OSError:  # a full or broken disk: bill from memory, as without a spool
                    log.exception("usage spool write failed; this record is kept in memory only")
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
            if self.spool is not None:
                with self._lock:  # every record of the sealed segments is pending now
                    sealed = self.spool.seal()
                if sealed is not None:
                    self._sealed.append(sealed)
            while True:
                with self._lock:
                    batch = [
                        self._pending.popleft()
                        for _ in range(min(self.batch_size, len(self._pending)))
                    ]
                if not batch:
                    self._drop_sealed()
                    return written
                try:
                    self.sink.write(batch)
                except Exception:
                    log.exception("usage flush failed; %d records kept for retry", len(batch))
                    with self._lock:
                        self._pending.extendleft(reversed(batch))
                    return written
                written += len(batch)

    def _drop_sealed(self) -> None:
        """Everything pending reached the sink: the sealed segments are no longer needed."""
        for path in self._sealed:
            path.unlink(missing_ok=True)
        self._sealed.clear()

    def recover(self) -> int:
        """Take over the spool segments of processes that are gone: their records go to the
        front of the buffer for the next flush; returns how many."""
        if self.spool is None:
            return 0
        recovered = 0
        with self._lock:
            for path, records in self.spool.orphans():
                self._pending.extendleft(reversed(records))
                self._sealed.append(path)
                recovered += len(records)
        if recovered:
            log.warning("recovered %d unflushed usage records from the spool", recovered)
        return recovered

    def start(self) -> None:
        if self._thread is not None:
            return
        self.recover()
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
        if isinstance(self.sink, ClosableSink):
            self.sink.close()  # first: a writer process's sink writes the rest in this process
        self.flush()
        if self.spool is not None:
            self.spool.close()  # what could not be flushed stays in its segment for the next start

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            self.flush()
