"""The credentials version: how a cache of principals learns, cheaply, that it may be stale.

Every write that can change what an API key may do (a key revoked, a member removed from an org
or given another role) calls ``bump`` inside its transaction. That bumps two counters:

* the durable one, the single row of ``credentials_version``, in the same transaction: every
  process of a deployment reads it with ``credentials_version`` (one primary-key read) and
  drops what it cached when it moved;
* this process's own (``local_version``), once that transaction has committed: the process
  that made the change drops its cache before its caller hears back, without any read.

Nothing here knows who caches (the studio's ``/v1`` gateway does): tenancy only counts.
"""

from __future__ import annotations

import threading

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, SessionTransaction

from neocloud.db.engine import Database
from neocloud.tenancy.access import rowcount
from neocloud.tenancy.tables import CredentialsVersionRow

ROW_ID = 1
_READ = sa.select(CredentialsVersionRow.version).where(CredentialsVersionRow.id == ROW_ID)


class _Counter:
    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def bump(self) -> None:
        with self._lock:
            self.value += 1


_LOCAL = _Counter()


def local_version() -> int:
    """This process's count of committed credential changes (it only grows)."""
    return _LOCAL.value


def credentials_version(db: Database) -> int:
    """The deployment's credentials version: it changes whenever a credential change commits."""
    with db.engine.connect() as conn:  # no ORM session: servers poll this several times a second
        found = conn.scalar(_READ)
    return found or 0


def bump(s: Session) -> None:
    """Bump the credentials version in ``s``'s transaction, and this process's counter once it
    commits. Call it last in the transaction: the row is locked until the commit."""
    row = CredentialsVersionRow
    step = sa.update(row).where(row.id == ROW_ID).values(version=row.version + 1)
    if rowcount(s.execute(step)) == 0:
        # The row was deleted (tests empty every table): put it back; a concurrent writer that
        # did so first makes ours an update again.
        try:
            with s.begin_nested():
                s.add(row(id=ROW_ID, version=1))
        except IntegrityError:
            s.execute(step)
    if not s.info.get(_PENDING):
        s.info[_PENDING] = True
        event.listen(s, "after_commit", _committed)
        event.listen(s, "after_transaction_end", _ended)


_PENDING, _COMMITTED = "neocloud.credentials_bumped", "neocloud.credentials_committed"


# after_commit also follows the release of a savepoint, and the session still looks in a
# transaction then: what counts is a commit seen as the outermost transaction ends.
def _committed(s: Session) -> None:
    s.info[_COMMITTED] = True


def _ended(s: Session, transaction: SessionTransaction) -> None:
    committed = s.info.pop(_COMMITTED, False)
    if transaction.parent is None and s.info.pop(_PENDING, False) and committed:
        _LOCAL.bump()
