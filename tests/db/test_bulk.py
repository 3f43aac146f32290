"""Bulk inserts (``db.bulk``) write the rows ORM objects would, on both backends."""

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from neocloud.compute.lifecycle import EVENTS, record_event
from neocloud.compute.tables import ComputeEventRow
from neocloud.db import bulk
from neocloud.db.engine import Database

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _events(db: Database) -> list[ComputeEventRow]:
    with db.transaction() as s:
        return list(s.scalars(sa.select(ComputeEventRow).order_by(ComputeEventRow.id)))


def test_buffered_rows_are_written_at_the_end_of_the_block(db: Database) -> None:
    with db.transaction() as s:
        assert not bulk.buffer(s, EVENTS, {})  # outside a block: the caller adds ORM objects
        with bulk.buffered(s):
            for i in range(250):
                record_event(
                    s,
                    subject_id=f"inst_{i:03d}",
                    org_id="org_a",
                    now=NOW,
                    kind="state",
                    from_state="pending",
                    to_state="provisioning",
                    message="x" * 2000 if i == 0 else None,
                )
            assert s.info.get("neocloud.bulk")  # queued, not yet written
        record_event(s, subject_id="inst_zzz", org_id="org_a", now=NOW, kind="queued")
    rows = _events(db)
    assert len(rows) == 251
    assert {r.subject_id for r in rows} == {f"inst_{i:03d}" for i in range(250)} | {"inst_zzz"}
    first = next(r for r in rows if r.subject_id == "inst_000")
    assert first.at == NOW
    assert first.to_state == "provisioning"
    assert first.message is not None
    assert len(first.message) == 1000
    assert all(r.node_id is None for r in rows)


def test_a_failed_block_writes_nothing(db: Database) -> None:
    def fail() -> None:
        with db.transaction() as s, bulk.buffered(s):
            record_event(s, subject_id="inst_a", org_id="org_a", now=NOW, kind="state")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fail()
    assert _events(db) == []
    with db.transaction() as s:  # the buffer does not outlive its block
        assert not bulk.buffer(s, EVENTS, {})


def test_insert_rows_with_nulls_and_an_empty_list(db: Database) -> None:
    rows = [
        {
            "id": f"evt_{i:04d}",
            "subject_id": "inst_b",
            "org_id": "org_b",
            "at": NOW,
            "kind": "state",
            "from_state": None,
            "to_state": None,
            "reason": None,
            "message": None,
            "node_id": "node_1" if i % 2 else None,
        }
        for i in range(3)
    ]
    with db.transaction() as s:
        bulk.insert_rows(s, EVENTS, [])
        bulk.insert_rows(s, EVENTS, rows)
    got = _events(db)
    assert [(r.id, r.node_id) for r in got] == [
        ("evt_0000", None),
        ("evt_0001", "node_1"),
        ("evt_0002", None),
    ]
