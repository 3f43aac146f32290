"""Append-only rows written in bulk: a hot path (a scheduling cycle, a reconciler pass) collects
its event rows and inserts them with a few multi-row ``INSERT … VALUES`` statements instead of
one ORM object each.

Buffering is opt-in per transaction (``buffered``): outside it, ``buffer`` answers False and
the caller adds its ORM object as before. Buffered rows are written when the block ends
(before the commit), so they are for rows that nothing in the same transaction reads back.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

_KEY = "neocloud.bulk"


def buffer(s: Session, table: sa.Table, row: dict[str, Any]) -> bool:
    """Queue ``row`` for ``table`` if the session is inside ``buffered``; else False."""
    pending: dict[sa.Table, list[dict[str, Any]]] | None = s.info.get(_KEY)
    if pending is None:
        return False
    pending.setdefault(table, []).append(row)
    return True


@contextmanager
def buffered(s: Session) -> Iterator[None]:
    """Collect ``buffer``ed rows in this block and insert them when it ends without error."""
    if _KEY in s.info:  # nested: the outer block writes
        yield
        return
    s.info[_KEY] = {}
    try:
        yield
        pending: dict[sa.Table, list[dict[str, Any]]] = s.info[_KEY]
        if pending:
            s.flush()  # the rows they refer to first
            for table, rows in pending.items():
                insert_rows(s, table, rows)
    finally:
        s.info.pop(_KEY, None)


def insert_rows(s: Session, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) in one statement and one round trip.

    On PostgreSQL each column travels as one array parameter and the server unnests them
    (``INSERT … SELECT * FROM unnest(…)``): the statement text stays the same whatever the
    row count, so it is cheap to build, unlike a VALUES list of thousands of parameters.
    Elsewhere (SQLite, in process) the driver's executemany is as fast.
    """
    if not rows:
        return
    conn = s.connection()
    dialect = conn.dialect
    if dialect.name != "postgresql":
        conn.execute(sa.insert(table), list(rows))
        return
    keys = list(rows[0])
    arrays: dict[str, list[Any]] = {}
    casts = []
    for i, key in enumerate(keys):
        col = table.c[key]
        process = col.type.bind_processor(dialect)
        values = [r[key] for r in rows]
        arrays[f"c{i}"] = [process(v) for v in values] if process else values
        casts.append(f"CAST(:c{i} AS {col.type.compile(dialect=dialect)}[])")
    columns = ", ".join(dialect.identifier_preparer.quote(k) for k in keys)
    name = dialect.identifier_preparer.format_table(table)
    conn.execute(
        # names come from the table metadata, quoted; values travel as parameters
        sa.text(f"INSERT INTO {name} ({columns}) SELECT * FROM unnest({', '.join(casts)})"),  # noqa: S608
        arrays,
    )
