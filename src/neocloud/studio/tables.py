"""Studio rows: usage records, one per request, written in batches by the metering buffer.

Billing drains these into its usage events; until then they are the record of token usage.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from neocloud.db.base import Base
from neocloud.db.types import UtcDateTime

ID = sa.String(40)


class StudioUsageRow(Base):
    __tablename__ = "studio_usage"
    __table_args__ = (sa.Index("ix_studio_usage_org_id_created_at", "org_id", "created_at"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    request_id: Mapped[str] = mapped_column(sa.String(64))
    org_id: Mapped[str] = mapped_column(ID)
    key_id: Mapped[str] = mapped_column(ID)
    model: Mapped[str] = mapped_column(sa.String(128))
    endpoint: Mapped[str] = mapped_column(sa.String(32))
    prompt_tokens: Mapped[int] = mapped_column(sa.Integer)
    completion_tokens: Mapped[int] = mapped_column(sa.Integer)
    aborted: Mapped[bool] = mapped_column(sa.Boolean)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
