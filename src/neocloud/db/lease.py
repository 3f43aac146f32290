"""A leader lease in the database.

One process holds the lease named, say, ``scheduler``; it renews before ``expires_at``. When the
holder dies, the lease expires and the next ``acquire`` by another process takes it over. Every
change is one conditional UPDATE (or an INSERT guarded by the primary key), so two contenders
can never both win, on SQLite or PostgreSQL.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult

from neocloud.db.engine import Database
from neocloud.db.tables import LeaseRow
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import Conflict


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    token: str
    expires_at: datetime


class LeaderLease:
    """Acquire, renew and release one named lease for one holder."""

    def __init__(self, db: Database, clock: Clock, *, name: str, holder: str, ttl_s: float) -> None:
        self.db, self.clock, self.name, self.holder = db, clock, name, holder
        self.ttl = timedelta(seconds=ttl_s)
        self.current: Lease | None = None

    def acquire(self) -> bool:
        """Take the lease if it is free, expired or already ours; renew it if ours."""
        now = self.clock.now()
        token = self.current.token if self.current else secrets.token_hex(16)
        expires = now + self.ttl
        with self.db.transaction() as s:
            result = s.execute(
                sa.update(LeaseRow)
                .where(LeaseRow.name == self.name)
                .where(sa.or_(LeaseRow.holder == self.holder, LeaseRow.expires_at <= now))
                .values(holder=self.holder, token=token, acquired_at=now, expires_at=expires)
                .execution_options(synchronize_session=False)
            )
            taken = cast(CursorResult[Any], result).rowcount
        if not taken:
            try:
                with self.db.transaction() as s:
                    s.add(
                        LeaseRow(
                            name=self.name,
                            holder=self.holder,
                            token=token,
                            acquired_at=now,
                            expires_at=expires,
                        )
                    )
            except Conflict:  # the row exists and is someone else's, unexpired
                self.current = None
                return False
        self.current = Lease(self.name, self.holder, token, expires)
        return True

    def is_held(self) -> bool:
        """True if our lease is still ours and unexpired now (check before applying results)."""
        if self.current is None:
            return False
        now = self.clock.now()
        with self.db.transaction() as s:
            row = s.execute(
                sa.select(LeaseRow.token, LeaseRow.expires_at).where(LeaseRow.name == self.name)
            ).first()
        return row is not None and row.token == self.current.token and row.expires_at > now

    def release(self) -> None:
        if self.current is None:
            return
        with self.db.transaction() as s:
            s.execute(
                sa.delete(LeaseRow)
                .where(LeaseRow.name == self.name)
                .where(LeaseRow.token == self.current.token)
                .execution_options(synchronize_session=False)
            )
        self.current = None


def lease_holder(db: Database, clock: Clock, name: str) -> Lease | None:
    """Who holds ``name`` now, if anyone."""
    with db.transaction() as s:
        row = s.scalars(sa.select(LeaseRow).where(LeaseRow.name == name)).first()
    if row is None or row.expires_at <= clock.now():
        return None
    return Lease(row.name, row.holder, row.token, row.expires_at)
