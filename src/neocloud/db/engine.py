"""Engines and transactions.

``Database`` wraps one engine and a session factory. A service does its work inside
``with db.transaction() as session:``: committed when the block ends, rolled back if it raises.
Nothing is created at import time.

While a request runs under an ``Idempotency-Key``, the first transaction that commits a write
also records, in itself, that the request took effect (``neocloud.db.effects``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from neocloud.db import effects
from neocloud.kernel.errors import Conflict
from neocloud.kernel.settings import Settings

# A PostgreSQL pool's size when none is given: what each pool keeps open, and how many more it
# opens under a burst (closed when returned). Processes built from settings use
# ``Settings.db_pool_size`` / ``db_max_overflow``; docs/reliability.md sums the budget.
POOL_SIZE = 10
MAX_OVERFLOW = 5
POOL_TIMEOUT_S = 30.0


def make_engine(
    url: str,
    *,
    echo: bool = False,
    pool_size: int = POOL_SIZE,
    max_overflow: int = MAX_OVERFLOW,
    pool_timeout_s: float = POOL_TIMEOUT_S,
) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys and a busy timeout. A PostgreSQL engine
    opens at most ``pool_size + max_overflow`` connections; a caller past that waits up to
    ``pool_timeout_s`` seconds for one to come back, then gets ``sqlalchemy.exc.TimeoutError``."""
    if url.startswith("sqlite"):
        path = sa.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": 30},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; take control so that a transaction
        # starts when SQLAlchemy says so and takes the write lock up front. A deferred BEGIN that
        # later upgrades to a writer can fail at once with "database is locked" under concurrency;
        # BEGIN IMMEDIATE waits on busy_timeout instead.
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return sa.create_engine(
        url,
        echo=echo,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout_s,
    )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # autocommit at the driver; we BEGIN ourselves
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """One database: its engine and how to open a transaction on it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False, autoflush=True)
        effects.watch_writes(engine)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        pool_size: int = POOL_SIZE,
        max_overflow: int = MAX_OVERFLOW,
        pool_timeout_s: float = POOL_TIMEOUT_S,
    ) -> Database:
        return cls(
            make_engine(
                url, pool_size=pool_size, max_overflow=max_overflow, pool_timeout_s=pool_timeout_s
            )
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        """The platform's database for an API or worker process: its URL, and a pool of
        ``db_pool_size`` connections plus ``db_max_overflow`` under a burst."""
        return cls.from_url(
            settings.resolved_database_url(),
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout_s=settings.db_pool_timeout_s,
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self, *, effect: bool = True) -> Iterator[Session]:
        """A session in one transaction: commit on success, roll back on error.

        A unique or exclusion violation that escapes the block becomes a ``Conflict``; services
        that know what the clash means catch ``IntegrityError`` themselves and say it better.
        If a request's ``EffectMark`` is pending and the block wrote, the mark's record is
        written in this transaction before it commits; ``effect=False`` says the block's writes
        are bookkeeping, no part of the request's effect.
        """
        mark = effects.pending_mark() if effect else None
        wrote = False
        session = self._sessions()
        try:
            with effects.watching(mark is not None) as writes:
                yield session
                if mark is not None and writes is not None:
                    session.flush()
                    # (not committed: a transaction nested in this block may have recorded it)
                    wrote = writes.seen and not mark.committed
                    if wrote:  # in this transaction, so the two commit or vanish together
                        mark.record(session)
                session.commit()
            if mark is not None and wrote:
                mark.committed = True
        except IntegrityError as exc:
            session.rollback()
            raise Conflict(
                "the change conflicts with existing data", code="integrity_conflict"
            ) from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()
