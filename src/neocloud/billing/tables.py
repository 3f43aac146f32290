"""Billing rows: price book versions, usage events (immutable facts), invoices, contracts,
credit grants and credit notes.

A usage event is unique on (org, source, event id): a replay hits the constraint and is
counted as a duplicate instead of being stored twice.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from neocloud.db.base import Base
from neocloud.db.types import Amount, Json, UtcDateTime

ID = sa.String(40)


class PriceBookRow(Base):
    """One published version; the one in force at ``t`` has the latest ``effective_from <= t``.

    ``gpu_prices``: ``{"H100-SXM-80GB.reserved.1y": "2.10", …}`` per GPU-hour (decimal
    strings); ``token_prices``: ``{model: {"input_per_1m", "output_per_1m", "batch_discount"}}``.
    """

    __tablename__ = "price_books"
    __table_args__ = (sa.UniqueConstraint("effective_from", name="uq_price_books_effective_from"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    effective_from: Mapped[datetime] = mapped_column(UtcDateTime())
    currency: Mapped[str] = mapped_column(sa.String(3))
    gpu_prices: Mapped[dict[str, Any]] = mapped_column(Json)
    token_prices: Mapped[dict[str, Any]] = mapped_column(Json)
    note: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    created_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class UsageEventRow(Base):
    """A metered event (tokens, storage, …) as sent, with when it arrived."""

    __tablename__ = "usage_events"
    __table_args__ = (
        sa.UniqueConstraint("org_id", "source", "event_id", name="uq_usage_events_org_source_id"),
        sa.Index("ix_usage_events_org_id_time", "org_id", "time"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ID)
    source: Mapped[str] = mapped_column(sa.String(128))
    event_id: Mapped[str] = mapped_column(sa.String(128))
    type: Mapped[str] = mapped_column(sa.String(128))
    subject: Mapped[str] = mapped_column(sa.String(255))
    time: Mapped[datetime] = mapped_column(UtcDateTime())
    data: Mapped[dict[str, Any]] = mapped_column(Json)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())


class InvoiceRow(Base):
    """One org's invoice for one month: ``draft`` (rebuilt from the facts on demand) until
    ``finalized``, after which it never changes; one per (org, period)."""

    __tablename__ = "invoices"
    __table_args__ = (
        sa.UniqueConstraint("org_id", "period", name="uq_invoices_org_id_period"),
        sa.Index("ix_invoices_org_id_id", "org_id", "id"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ID)
    period: Mapped[str] = mapped_column(sa.String(7))  # YYYY-MM
    state: Mapped[str] = mapped_column(sa.String(16))  # an InvoiceState
    currency: Mapped[str] = mapped_column(sa.String(3))
    price_book_id: Mapped[str] = mapped_column(ID)
    total: Mapped[Decimal] = mapped_column(Amount())
    rated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    finalized_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class InvoiceLineRow(Base):
    """A line: usage of the invoice's period, or an adjustment for late facts of an earlier,
    finalized period (``usage_period`` says which)."""

    __tablename__ = "invoice_lines"
    __table_args__ = (sa.Index("ix_invoice_lines_invoice_id_position", "invoice_id", "position"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    invoice_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("invoices.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(sa.Integer)
    kind: Mapped[str] = mapped_column(sa.String(16))  # a LineKind
    usage_period: Mapped[str] = mapped_column(sa.String(7))
    sku: Mapped[str] = mapped_column(sa.String(64))
    project_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    gpu_seconds: Mapped[Decimal] = mapped_column(Amount())
    unit_price: Mapped[Decimal] = mapped_column(Amount())
    amount: Mapped[Decimal] = mapped_column(Amount())
    fact_ids: Mapped[list[str]] = mapped_column(Json)
    # The contract or credit grant a line prices (true-up, drawdown, reservation, credit lines).
    reference_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    # Token lines (SKU ``MODEL.tokens[.batch]``): the tokens billed and the prices per 1M
    # applied (a batch line's after its discount); None on other lines, and on a token
    # adjustment whose parts were priced differently (the prices) or billed before these
    # columns existed (the counts).
    input_tokens: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    output_tokens: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    input_price_per_1m: Mapped[Decimal | None] = mapped_column(Amount(), nullable=True)
    output_price_per_1m: Mapped[Decimal | None] = mapped_column(Amount(), nullable=True)


class ContractRow(Base):
    """An agreement the operator records for an org, in force over ``[start_at, end_at)``.

    ``kind`` says which fields matter: ``commit_spend`` (``amount`` per month, true-up),
    ``commit_capacity`` (``gpus`` x hours x ``rate``, optionally of one ``gpu_model``),
    ``prepaid`` (``amount`` paid upfront, drawn down by usage), ``reservation`` (compute's
    ``reservation_id`` priced at the price book's reserved ``term``, ``billing`` upfront or
    monthly) and ``backstop`` (``counterparty`` pays ``rate`` for unsold GPU-hours of
    ``gpus`` x ``gpu_model``: operator revenue, never an invoice line).
    """

    __tablename__ = "billing_contracts"
    __table_args__ = (
        sa.Index("ix_billing_contracts_org_id_id", "org_id", "id"),
        sa.Index("ix_billing_contracts_kind_end_at", "kind", "end_at"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ID)
    kind: Mapped[str] = mapped_column(sa.String(16))  # a ContractKind
    start_at: Mapped[datetime] = mapped_column(UtcDateTime())
    end_at: Mapped[datetime] = mapped_column(UtcDateTime())
    currency: Mapped[str] = mapped_column(sa.String(3))
    amount: Mapped[Decimal | None] = mapped_column(Amount(), nullable=True)
    gpu_model: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    gpus: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    rate: Mapped[Decimal | None] = mapped_column(Amount(), nullable=True)
    reservation_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    term: Mapped[str | None] = mapped_column(sa.String(8), nullable=True)
    billing: Mapped[str | None] = mapped_column(sa.String(8), nullable=True)  # ReservationBilling
    counterparty: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    note: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    created_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class CreditGrantRow(Base):
    """Credit granted to an org: used by priority (lowest first), then earliest expiry; what is
    left is ``amount`` minus the credit lines of finalized invoices that name it."""

    __tablename__ = "credit_grants"
    __table_args__ = (sa.Index("ix_credit_grants_org_id_id", "org_id", "id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ID)
    amount: Mapped[Decimal] = mapped_column(Amount())
    currency: Mapped[str] = mapped_column(sa.String(3))
    priority: Mapped[int] = mapped_column(sa.Integer)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    paid: Mapped[bool] = mapped_column(sa.Boolean)
    note: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    created_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class CreditNoteRow(Base):
    """Money given back on a finalized invoice when late facts lower it (the invoice itself is
    never changed): negative ``lines`` for ``usage_period``, counted as billed from then on."""

    __tablename__ = "credit_notes"
    __table_args__ = (sa.Index("ix_credit_notes_org_id_id", "org_id", "id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ID)
    invoice_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("invoices.id"))
    usage_period: Mapped[str] = mapped_column(sa.String(7))
    currency: Mapped[str] = mapped_column(sa.String(3))
    total: Mapped[Decimal] = mapped_column(Amount())
    lines: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
