"""Migrations and tables agree, on both backends; pagination behaves."""

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from neocloud.db.engine import Database
from neocloud.db.metadata import all_metadata
from neocloud.db.migrate import current_revisions, head_revisions, upgrade
from neocloud.db.pagination import decode_cursor, encode_cursor, paginate
from neocloud.db.tables import LeaseRow
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.errors import InvalidRequest


def test_database_is_at_every_head(db: Database) -> None:
    assert current_revisions(db) == head_revisions(db)
    upgrade(db)  # applying again is a no-op
    assert current_revisions(db) == head_revisions(db)


def test_migrations_match_the_tables(db: Database) -> None:
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, all_metadata())
    assert diff == [], f"tables and migrations differ; write a migration: {diff}"


def test_cursor_pagination_walks_every_row_once(db: Database, clock: VirtualClock) -> None:
    now = clock.now()
    with db.transaction() as s:
        for i in range(23):
            s.add(
                LeaseRow(name=f"l{i:02d}", holder="h", token="t", acquired_at=now, expires_at=now)
            )
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        with db.transaction() as s:
            page = paginate(s, sa.select(LeaseRow), LeaseRow.name, limit=5, after=after)
        seen += [row.name for row in page.items]
        pages += 1
        if not page.has_more:
            assert page.next_cursor is None
            break
        after = page.next_cursor
    assert seen == sorted(f"l{i:02d}" for i in range(23))
    assert pages == 5


def test_bad_cursor_is_a_precise_error() -> None:
    assert decode_cursor(encode_cursor("node_123")) == "node_123"
    with pytest.raises(InvalidRequest) as caught:
        decode_cursor("!!!not-base64")
    assert caught.value.param == "after"
    assert caught.value.code == "invalid_cursor"
