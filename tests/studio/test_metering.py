"""The usage buffer: batches, retries after a failed flush, never blocks the request path."""

from __future__ import annotations

from datetime import UTC, datetime

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
