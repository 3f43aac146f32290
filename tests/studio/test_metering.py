"""The usage buffer: batches, retries after a failed flush, never blocks the request path."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from neocloud.studio.metering import MemoryUsageSink, UsageBuffer, UsageRecord


def _record(n: int) -> UsageRecord:
    return UsageRecord(
        request_id=f"r{n}",
        org_id="org",
        key_id="key",
        model="m",
        endpoint="completions",
        prompt_tokens=n,
        completion_tokens=1,
        aborted=False,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


class _Flaky(MemoryUsageSink):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.fail = True

    def write(self, records: list[UsageRecord]) -> None:
        if self.fail:
            self.fail = False
            raise ConnectionError("database away")
        self.batches.append(len(records))
        super().write(records)


def test_flush_writes_in_batches_and_keeps_a_failed_batch() -> None:
    sink = _Flaky()
    buffer = UsageBuffer(sink, batch_size=4)
    for n in range(10):
        buffer.record(_record(n))
    assert buffer.flush() == 0  # the first write fails: nothing lost
    assert buffer.pending == 10
    assert buffer.flush() == 10
    assert sink.batches == [4, 4, 2]
    assert [r.prompt_tokens for r in sink.records] == list(range(10))


def test_background_flusher_drains_on_stop() -> None:
    sink = MemoryUsageSink()
    buffer = UsageBuffer(sink, interval_s=60)
    buffer.start()
    buffer.record(_record(1))
    buffer.stop()
    assert len(sink.records) == 1


def test_a_killed_process_usage_is_recovered_from_the_spool(tmp_path: Path) -> None:
    """Records appended but never flushed (the process died) are flushed by the next buffer
    started on the same directory; their segment is then removed. A replay of a record that
    had reached the sink before the kill is harmless there (billing dedups on the id)."""
    from neocloud.studio.spool import UsageSpool

    dead = UsageBuffer(MemoryUsageSink(), interval_s=60, spool=UsageSpool(tmp_path))
    for n in range(5):
        dead.record(_record(n))
    # "SIGKILL": the buffer is dropped without a flush; only its spool file remains. Make the
    # segment look like another (dead) process's by renaming it to a pid that cannot exist.
    segment = next(tmp_path.glob("*.jsonl"))
    assert dead.spool is not None
    dead.spool.close()
    segment.rename(tmp_path / ("999999999-" + segment.name.split("-", 1)[1]))

    sink = MemoryUsageSink()
    fresh = UsageBuffer(sink, interval_s=60, spool=UsageSpool(tmp_path))
    assert fresh.recover() == 5
    fresh.record(_record(5))
    assert fresh.flush() == 6
    assert sorted(r.prompt_tokens for r in sink.records) == list(range(6))
    assert sink.records[0].created_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert list(tmp_path.glob("*.jsonl")) == []  # flushed: nothing left to recover
    fresh.stop()


def test_a_failed_flush_keeps_the_spool_segment(tmp_path: Path) -> None:
    from neocloud.studio.spool import UsageSpool

    sink = _Flaky()
    buffer = UsageBuffer(sink, spool=UsageSpool(tmp_path))
    buffer.record(_record(1))
    assert buffer.flush() == 0
    assert len(list(tmp_path.glob("*.jsonl"))) == 1  # the database was away: still spooled
    assert buffer.flush() == 1
    assert list(tmp_path.glob("*.jsonl")) == []
    buffer.stop()


def test_a_live_process_segment_is_left_alone(tmp_path: Path) -> None:
    from neocloud.studio.spool import UsageSpool

    one = UsageBuffer(MemoryUsageSink(), spool=UsageSpool(tmp_path))
    one.record(_record(1))
    two = UsageBuffer(MemoryUsageSink(), spool=UsageSpool(tmp_path))
    assert two.recover() == 0  # ``one`` is open in this process: it flushes its own
    one.stop()
    two.stop()


def test_a_spool_that_cannot_be_written_still_meters_in_memory(tmp_path: Path) -> None:
    from neocloud.studio.spool import UsageSpool

    spool = UsageSpool(tmp_path)
    sink = MemoryUsageSink()
    buffer = UsageBuffer(sink, spool=spool)
    tmp_path.chmod(0o500)  # no new segment can be created
    try:
        if os.geteuid() == 0:  # root writes anyway: break the directory instead
            spool.directory = tmp_path / "missing" / "dir"
        buffer.record(_record(7))
    finally:
        tmp_path.chmod(0o700)
    assert buffer.flush() == 1
    assert [r.prompt_tokens for r in sink.records] == [7]
    buffer.stop()
