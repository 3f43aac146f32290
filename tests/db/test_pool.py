"""The connection budget: a Database built from settings opens at most the configured pool
(docs/reliability.md, "Connection budget")."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import TimeoutError as PoolTimeout

from neocloud.db.engine import Database
from neocloud.kernel.clock import SystemClock
from neocloud.kernel.settings import Settings
from neocloud.studio.runtime import usage_sink
from neocloud.studio.usagewriter import ProcessUsageSink


@pytest.mark.postgres
def test_a_database_from_settings_opens_the_configured_pool(
    postgresql_db: Database, tmp_path: Path
) -> None:
    url = postgresql_db.engine.url.render_as_string(hide_password=False)
    settings = Settings(
        data_dir=tmp_path,
        database_url=url,
        db_pool_size=3,
        db_max_overflow=1,
        db_pool_timeout_s=0.2,
    )
    db = Database.from_settings(settings)
    try:
        assert db.engine.pool.size() == 3  # type: ignore[attr-defined]
        with ExitStack() as held:
            for _ in range(4):  # the pool and its overflow: all open at once
                conn = held.enter_context(db.engine.connect())
                assert conn.execute(sa.text("SELECT 1")).scalar() == 1
            assert db.engine.pool.checkedout() == 4  # type: ignore[attr-defined]
            with pytest.raises(PoolTimeout):  # a fifth waits, then fails: never opened
                db.engine.connect()
        # returned: the three of the pool stay open, the overflow one is closed
        assert db.engine.pool.checkedin() == 3  # type: ignore[attr-defined]
    finally:
        db.dispose()


def test_the_usage_writer_gets_its_small_pool(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, studio_usage_writer_pool_size=1)
    db = Database.from_url(settings.resolved_database_url())
    try:
        sink = usage_sink(db=db, clock=SystemClock(), settings=settings)
        assert isinstance(sink, ProcessUsageSink)  # nothing started until a batch comes
        assert sink.pool_size == 1
        assert sink.pid is None
    finally:
        db.dispose()
