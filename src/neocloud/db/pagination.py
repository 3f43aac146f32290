"""Cursor pagination over id-ordered queries.

Ids sort by creation time, so ``ORDER BY id`` is a stable order and the last id of a page is a
complete cursor: the next page is ``WHERE id > cursor``. The cursor is opaque to callers
(base64url of the id), so the scheme can change without breaking clients.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import QueryableAttribute, Session

from neocloud.kernel.errors import InvalidRequest

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    has_more: bool
    next_cursor: str | None


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = base64.urlsafe_b64decode(padded.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidRequest(
            "the cursor is not one this API returned", code="invalid_cursor", param="after"
        ) from None
    if not value or len(value) > 64 or not value.isascii():
        raise InvalidRequest(
            "the cursor is not one this API returned", code="invalid_cursor", param="after"
        )
    return value


def paginate(
    session: Session,
    stmt: sa.Select[Any],
    id_column: sa.ColumnElement[str] | QueryableAttribute[str],
    *,
    limit: int,
    after: str | None,
) -> Page[Any]:
    """Run ``stmt`` ordered by ``id_column`` and return one page of scalar rows."""
    if after:
        stmt = stmt.where(id_column > decode_cursor(after))
    rows = list(session.scalars(stmt.order_by(id_column).limit(limit + 1)))
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(_id_of(rows[-1], id_column)) if has_more and rows else None
    return Page(rows, has_more, next_cursor)


def _id_of(row: Any, id_column: sa.ColumnElement[str] | QueryableAttribute[str]) -> str:
    key = getattr(id_column, "key", "id")
    return str(getattr(row, key))
