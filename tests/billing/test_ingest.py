"""Usage-event ingestion (the set-based insert behind ``POST /usage/events``), both backends:
every (org, source, id) is stored once and each replay is counted as a duplicate, whether it
repeats an event of the same batch or of an earlier one."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from neocloud.billing.tables import UsageEventRow
from neocloud.billing.usage import MAX_BATCH, TOKENS, UsageEvent, record_usage_events
from neocloud.db.engine import Database
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.errors import ValidationFailed


def _event(clock: VirtualClock, eid: str, source: str = "studio", **data: Any) -> UsageEvent:
    payload = {"model": "llama", "input_tokens": 10, "output_tokens": 3, "batch": False} | data
    return UsageEvent(eid, source, TOKENS, "prj_1", clock.now() - timedelta(hours=1), payload)


def _stored(db: Database) -> list[tuple[str, str, str, dict[str, Any]]]:
    with db.transaction() as s:
        rows = s.execute(
            sa.select(
                UsageEventRow.org_id,
                UsageEventRow.source,
                UsageEventRow.event_id,
                UsageEventRow.data,
            ).order_by(UsageEventRow.org_id, UsageEventRow.source, UsageEventRow.event_id)
        ).all()
    return [tuple(r) for r in rows]


def test_duplicates_within_and_across_batches_count_once(db: Database, clock: VirtualClock) -> None:
    first = [_event(clock, "a"), _event(clock, "b"), _event(clock, "a", input_tokens=99)]
    result = record_usage_events(db=db, clock=clock, org_id="org_1", events=first)
    assert (result.accepted, result.duplicates) == (2, 1)
    second = [
        _event(clock, "b"),  # replay of the first batch
        _event(clock, "c"),
        _event(clock, "c"),  # replay within this batch
        _event(clock, "a", source="other"),  # another source: another event
    ]
    result = record_usage_events(db=db, clock=clock, org_id="org_1", events=second)
    assert (result.accepted, result.duplicates) == (2, 2)
    # Another org may use the same ids.
    result = record_usage_events(db=db, clock=clock, org_id="org_2", events=first)
    assert (result.accepted, result.duplicates) == (2, 1)
    stored = _stored(db)
    assert [r[:3] for r in stored] == [
        ("org_1", "other", "a"),
        ("org_1", "studio", "a"),
        ("org_1", "studio", "b"),
        ("org_1", "studio", "c"),
        ("org_2", "studio", "a"),
        ("org_2", "studio", "b"),
    ]
    # The first copy of a replayed event is the one kept, data intact (JSON round trip).
    kept = {"model": "llama", "input_tokens": 10, "output_tokens": 3, "batch": False}
    assert stored[1][3] == kept


def test_a_full_batch_with_replays_is_counted_exactly(db: Database, clock: VirtualClock) -> None:
    events = [_event(clock, f"e{i}", input_tokens=i) for i in range(MAX_BATCH)]
    result = record_usage_events(db=db, clock=clock, org_id="org_1", events=events)
    assert (result.accepted, result.duplicates) == (1000, 0)
    again = events[500:] + [_event(clock, f"n{i}") for i in range(300)] + events[:200]
    result = record_usage_events(db=db, clock=clock, org_id="org_1", events=again)
    assert (result.accepted, result.duplicates) == (300, 700)
    with db.transaction() as s:
        count = s.scalar(sa.select(sa.func.count()).select_from(UsageEventRow))
        times = s.execute(sa.select(UsageEventRow.time, UsageEventRow.received_at)).all()
    assert count == 1300
    assert {t for t, _ in times} == {clock.now() - timedelta(hours=1)}
    assert {r for _, r in times} == {clock.now()}


def test_a_refused_batch_stores_nothing(db: Database, clock: VirtualClock) -> None:
    bad = _event(clock, "late")
    when = clock.now() - timedelta(days=36)
    late = UsageEvent(bad.id, bad.source, bad.type, bad.subject, when, {})
    with pytest.raises(ValidationFailed):
        record_usage_events(db=db, clock=clock, org_id="org_1", events=[_event(clock, "ok"), late])
    assert _stored(db) == []
