"""Usage written through a writer process: the serving process only pickles batches; the child
writes billing's events and ``studio_usage``; a replayed batch counts once, a killed writer is
started again at the next batch, and a batch it refuses stays with the buffer."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from neocloud.billing.tables import UsageEventRow
from neocloud.db.engine import Database
from neocloud.kernel.clock import SystemClock
from neocloud.kernel.settings import Settings
from neocloud.studio.metering import BillingUsageSink, UsageBuffer, UsageRecord
from neocloud.studio.runtime import usage_sink
from neocloud.studio.tables import StudioUsageRow
from neocloud.studio.usagewriter import ProcessUsageSink
from neocloud.tenancy.tables import OrgRow


def _records(org_id: str, *ids: str) -> list[UsageRecord]:
    now = SystemClock().now()  # the writer judges events against the system clock
    return [
        UsageRecord(
            request_id=i,
            org_id=org_id,
            key_id="key_1",
            model="neocloud/echo",
            endpoint="chat.completions",
            prompt_tokens=3,
            completion_tokens=2,
            aborted=False,
            created_at=now,
        )
        for i in ids
    ]


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return
        except FileNotFoundError:
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} still runs")


def _counts(db: Database) -> tuple[int, int]:
    with db.transaction() as s:
        events = s.scalar(sa.select(sa.func.count()).select_from(UsageEventRow))
        log = s.scalar(sa.select(sa.func.count()).select_from(StudioUsageRow))
    return int(events or 0), int(log or 0)


def test_the_writer_process_writes_once_and_comes_back(db: Database, admin_key: str) -> None:
    with db.transaction() as s:
        org_id = s.scalars(sa.select(OrgRow.id)).first()
    assert org_id is not None
    sink = ProcessUsageSink(db.engine.url.render_as_string(hide_password=False))
    try:
        sink.write(_records(org_id, "chatcmpl-a", "chatcmpl-b"))
        assert _counts(db) == (2, 2)
        sink.write(_records(org_id, "chatcmpl-a", "chatcmpl-b"))  # a retried batch
        assert _counts(db) == (2, 2)
        first = sink.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)  # the writer dies between batches
        _wait_gone(first)
        sink.write(_records(org_id, "chatcmpl-c"))  # started again
        assert sink.pid not in (None, first)
        assert _counts(db) == (3, 3)
        second = sink.pid
        assert second is not None
        os.kill(second, signal.SIGKILL)  # and at once: it may still look alive when written to
        sink.write(_records(org_id, "chatcmpl-d"))
        assert _counts(db) == (4, 4)
    finally:
        sink.close()
    assert sink.pid is None


def test_the_last_records_of_a_stopping_server_are_written_in_process(
    db: Database, admin_key: str
) -> None:
    """Stopping, the buffer closes the writer first, then writes what is left through the
    in-process sink: no writer process is started just for the last records."""
    with db.transaction() as s:
        org_id = s.scalars(sa.select(OrgRow.id)).first()
    assert org_id is not None
    sink = ProcessUsageSink(
        db.engine.url.render_as_string(hide_password=False),
        local=BillingUsageSink(db, SystemClock()),
    )
    buffer = UsageBuffer(sink, interval_s=60)
    for r in _records(org_id, "chatcmpl-last"):
        buffer.record(r)
    buffer.stop()
    assert sink.pid is None
    assert _counts(db) == (1, 1)


def test_a_batch_the_writer_cannot_write_stays_in_the_buffer(tmp_path: Path) -> None:
    broken = ProcessUsageSink(f"sqlite:///{tmp_path}/missing/dir/neocloud.db")
    buffer = UsageBuffer(broken)
    try:
        for r in _records("org_1", "chatcmpl-x"):
            buffer.record(r)
        assert buffer.flush() == 0
        assert buffer.pending == 1
    finally:
        broken.close()


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_tests_and_memory_databases_keep_the_thread(db: Database, settings: Settings) -> None:
    from neocloud.kernel.clock import VirtualClock

    assert isinstance(usage_sink(db=db, clock=VirtualClock(), settings=settings), BillingUsageSink)
    memory = Database.from_url("sqlite://")
    try:
        sink = usage_sink(db=memory, clock=SystemClock(), settings=settings)
        assert isinstance(sink, BillingUsageSink)
    finally:
        memory.dispose()
    sink = usage_sink(db=db, clock=SystemClock(), settings=settings)
    assert isinstance(sink, ProcessUsageSink)
    threaded = settings.model_copy(update={"studio_usage_writer": "thread"})
    assert isinstance(usage_sink(db=db, clock=SystemClock(), settings=threaded), BillingUsageSink)
