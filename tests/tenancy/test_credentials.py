"""The credentials version: durable in the transaction, this process's count after the commit."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from neocloud.db.engine import Database
from neocloud.tenancy import credentials
from neocloud.tenancy.tables import CredentialsVersionRow


def test_a_bump_counts_in_the_database_and_here_once_committed(db: Database) -> None:
    durable, local = credentials.credentials_version(db), credentials.local_version()
    with db.transaction() as s:
        credentials.bump(s)
        with s.begin_nested():  # a savepoint released is not the commit
            pass
        credentials.bump(s)
        assert credentials.local_version() == local
    assert credentials.credentials_version(db) == durable + 2
    assert credentials.local_version() == local + 1  # one commit, one count


def test_a_rolled_back_bump_counts_nowhere(db: Database) -> None:
    durable, local = credentials.credentials_version(db), credentials.local_version()

    def change_then_fail() -> None:
        with db.transaction() as s:
            credentials.bump(s)
            with s.begin_nested():
                pass
            raise RuntimeError

    with pytest.raises(RuntimeError):
        change_then_fail()
    assert credentials.credentials_version(db) == durable
    assert credentials.local_version() == local


def test_the_row_comes_back_when_deleted(db: Database) -> None:
    with db.transaction() as s:
        s.execute(sa.delete(CredentialsVersionRow))
    assert credentials.credentials_version(db) == 0
    for expected in (1, 2):
        with db.transaction() as s:
            credentials.bump(s)
        assert credentials.credentials_version(db) == expected
