"""Usage flushes in a child process, so that they never hold the serving process's GIL.

A flush thread in the serving process competes with the event loop for the GIL: each time the
loop lets go of it (every poll, so a few times per request) the flusher takes it and keeps it
for a whole switch interval (5 ms) of building rows, and one flush of a second's records took
tens to hundreds of milliseconds of CPU. That was most of the gateway's added p99
(bench/studio/README.md, "The tail"). ``ProcessUsageSink`` only pickles each batch (C code,
microseconds) and hands it over a pipe to a writer process that runs the real sink
(``BillingUsageSink``: billing's usage events and ``studio_usage``) and answers ``ok`` or the
error. A batch not answered ``ok`` raises, so ``UsageBuffer`` keeps it and retries it whole;
both writes are idempotent on the request id, so a batch written by a writer that died before
answering is not counted twice. A dead writer is started again at the next batch.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from neocloud.studio.metering import UsageRecord, UsageSink

log = logging.getLogger("neocloud.studio.usagewriter")


class UsageWriterFailed(RuntimeError):
    """The writer process refused a batch, or did not answer within the timeout."""


class _WriterGone(UsageWriterFailed):
    pass


class ProcessUsageSink:
    """A ``UsageSink`` that writes through a child process on ``database_url``."""

    def __init__(
        self,
        database_url: str,
        *,
        local: UsageSink | None = None,
        answer_timeout_s: float = 60.0,
        pool_size: int = 2,
    ) -> None:
        self.database_url = database_url
        # The writer writes one batch at a time: a small pool, counted in the connection budget.
        self.pool_size = pool_size
        # After ``close`` (the server stopping): the last records go through ``local`` in this
        # process rather than through a writer started for them (seconds, on a busy machine).
        self.local = local
        self.answer_timeout_s = answer_timeout_s
        self._closed = False
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None

    @property
    def pid(self) -> int | None:
        """The writer process's id, while one runs."""
        return self._process.pid if self._process is not None else None

    def _writer(self) -> Connection:
        if self._process is not None and self._process.is_alive() and self._conn is not None:
            return self._conn
        self._stop_writer()
        ours, theirs = multiprocessing.Pipe()
        process = multiprocessing.get_context("spawn").Process(
            target=serve_writes,
            args=(theirs, self.database_url, self.pool_size),
            name="studio-usage-writer",
            daemon=True,
        )
        process.start()
        theirs.close()
        self._process, self._conn = process, ours
        return ours

    def write(self, records: list[UsageRecord]) -> None:
        """Write through the writer; one that went away (killed with the process group, say)
        is replaced and the batch sent again once: the writes are idempotent."""
        if not records:
            return
        if self._closed and self.local is not None:
            self.local.write(records)
            return
        try:
            self._write_once(records)
        except _WriterGone:
            self._write_once(records)

    def _write_once(self, records: list[UsageRecord]) -> None:
        conn = self._writer()
        try:
            conn.send_bytes(pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL))
            if not conn.poll(self.answer_timeout_s):
                self._stop_writer()
                raise UsageWriterFailed(
                    f"the usage writer did not answer within {self.answer_timeout_s:g} s"
                )
            answer = conn.recv_bytes().decode()
        except (EOFError, OSError) as exc:
            self._stop_writer()
            raise _WriterGone(f"the usage writer went away: {exc!r}") from None
        if answer != "ok":
            raise UsageWriterFailed(f"the usage writer refused the batch: {answer}")

    def close(self) -> None:
        """Stop the writer (it finishes the batch in hand: its pipe closes after it); later
        batches go through ``local`` when there is one."""
        self._closed = True
        self._stop_writer()

    def _stop_writer(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(timeout=5)
            self._process.close()
            self._process = None


def serve_writes(conn: Connection, database_url: str, pool_size: int = 2) -> None:
    """The writer process: batches in, ``ok`` or the error out, until the pipe closes; at most
    ``pool_size`` database connections. Ctrl-C
    at a terminal reaches the whole process group: the writer leaves it to the server, which
    flushes what is left through it while shutting down."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from neocloud.db.engine import Database
    from neocloud.kernel.clock import SystemClock
    from neocloud.studio.metering import BillingUsageSink

    db = Database.from_url(database_url, pool_size=pool_size, max_overflow=0)
    sink = BillingUsageSink(db, SystemClock())
    try:
        while True:
            try:
                payload = conn.recv_bytes()
            except (EOFError, OSError):
                return
            try:
                sink.write(pickle.loads(payload))  # noqa: S301 - from our own parent, over a private pipe
            except Exception as exc:
                log.exception("usage batch failed")
                conn.send_bytes(f"{type(exc).__name__}: {exc}"[:2000].encode())
            else:
                conn.send_bytes(b"ok")
    finally:
        conn.close()
        db.engine.dispose()
