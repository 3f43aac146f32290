"""The declarative base every context's ``tables.py`` builds on."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase

# Named constraints so that Alembic migrations are stable across SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def table_of(row: type[Base]) -> sa.Table:
    """The ``Table`` a row class maps (typed as one: SQLAlchemy types ``__table__`` as any
    ``FromClause``, which Core's insert, update and delete do not take)."""
    table = row.__table__
    if not isinstance(table, sa.Table):  # a class mapped to a join or a select, not a table
        raise TypeError(f"{row.__name__} does not map a single table")
    return table
