"""Tie a request's effect to a record of it: the first transaction that commits a write while
an ``EffectMark`` is current also runs the mark's ``record`` in that same transaction.

The ``Idempotency-Key`` middleware sets a mark for the request it runs
(``neocloud.api.middleware``): its ``record`` stamps the key's row "effect committed", fenced on
the claim's lease token, so the key and the request's first committed write are one atomic
fact. A crash can then leave only two states: nothing committed (a retry may run it again) or
the effect and its stamp committed together (a retry never runs it twice).

Writes are recognised from the SQL the engine sends (``INSERT``, ``UPDATE``, ``DELETE``,
``MERGE``, and a ``WITH`` that does one of them); a transaction that only reads records nothing.
Bookkeeping that is no part of a request's effect (an API key's ``last_used_at``) opens its
transaction with ``Database.transaction(effect=False)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

_WRITE = re.compile(
    r"^\s*(INSERT|UPDATE|DELETE|MERGE)\b|^\s*WITH\b.*\b(INSERT\s+INTO|DELETE\s+FROM|UPDATE\s+\S+\s+SET)\b",
    re.IGNORECASE | re.DOTALL,
)


@dataclass
class EffectMark:
    """What a request's first committed write must also write: ``record(session)`` runs in that
    transaction just before it commits (raising there rolls the write back); ``committed`` turns
    true once it has. Shared, not copied, by every thread and task the request runs in."""

    record: Callable[[Session], None]
    committed: bool = False


@dataclass
class _Writes:
    seen: bool = field(default=False)


_MARK: ContextVar[EffectMark | None] = ContextVar("neocloud_effect_mark", default=None)
_WRITES: ContextVar[_Writes | None] = ContextVar("neocloud_effect_writes", default=None)


@contextmanager
def marking_effects(mark: EffectMark) -> Iterator[EffectMark]:
    """Make ``mark`` current for the block (and the threads and tasks it starts)."""
    token = _MARK.set(mark)
    try:
        yield mark
    finally:
        _MARK.reset(token)


def pending_mark() -> EffectMark | None:
    """The current mark, if there is one and nothing has recorded it yet."""
    mark = _MARK.get()
    return mark if mark is not None and not mark.committed else None


def is_write(statement: str) -> bool:
    """Whether ``statement`` (SQL text) changes rows."""
    return _WRITE.match(statement) is not None


def watch_writes(engine: Engine) -> None:
    """Note each write ``engine`` executes for the transaction watching (once per engine)."""
    if not event.contains(engine, "before_cursor_execute", _note_write):
        event.listen(engine, "before_cursor_execute", _note_write)


@contextmanager
def watching(active: bool) -> Iterator[_Writes | None]:
    """Collect, for the block, whether this thread's statements wrote anything (``active``), or
    hide them from a transaction watching around this one (not ``active``)."""
    writes = _Writes() if active else None
    token = _WRITES.set(writes)
    try:
        yield writes
    finally:
        _WRITES.reset(token)


def _note_write(
    _conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool
) -> None:
    writes = _WRITES.get()
    if writes is not None and not writes.seen and is_write(statement):
        writes.seen = True
