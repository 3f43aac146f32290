"""Tables the platform core owns: the leader lease and stored idempotent responses."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from neocloud.db.base import Base
from neocloud.db.types import Json, UtcDateTime


class LeaseRow(Base):
    """A named lease: whoever holds an unexpired one does the leader's work."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(sa.String(128))
    token: Mapped[str] = mapped_column(sa.String(64))
    acquired_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())


class IdempotencyRow(Base):
    """A POST with an ``Idempotency-Key``: its claim while it runs, then its first response,
    replayed for repeats."""

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(sa.String(64), primary_key=True)  # hash of the caller's key
    key: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    method: Mapped[str] = mapped_column(sa.String(8))
    path: Mapped[str] = mapped_column(sa.String(512))
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    status_code: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    response_body: Mapped[Any] = mapped_column(Json, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    # The claim of the request running under the key: a lease (renewed while it runs) and the
    # token that fences its effect; a retry after ``locked_until`` may take an unfinished
    # claim over, never one whose effect committed.
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    lease_token: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    # Set in the transaction of the request's first committed write: the request took effect.
    effect_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
