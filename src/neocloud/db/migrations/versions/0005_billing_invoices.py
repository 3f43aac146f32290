"""billing invoices: invoices and their lines

Revision ID: 0005_billing_invoices
Revises: 0004_billing
Create Date: 2026-11-28 19:26:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import neocloud.db.types

revision: str = "0005_billing_invoices"
down_revision: str | None = "0004_billing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "invoices",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("price_book_id", sa.String(length=40), nullable=False),
        sa.Column("total", neocloud.db.types.Amount(precision=20, scale=6), nullable=False),
        sa.Column("rated_at", neocloud.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("created_at", neocloud.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("finalized_at", neocloud.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
        sa.UniqueConstraint("org_id", "period", name="uq_invoices_org_id_period"),
    )
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.create_index("ix_invoices_org_id_id", ["org_id", "id"], unique=False)
    op.create_table(
        "invoice_lines",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("invoice_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("usage_period", sa.String(length=7), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=40), nullable=True),
        sa.Column("gpu_seconds", neocloud.db.types.Amount(precision=20, scale=6), nullable=False),
        sa.Column("unit_price", neocloud.db.types.Amount(precision=20, scale=6), nullable=False),
        sa.Column("amount", neocloud.db.types.Amount(precision=20, scale=6), nullable=False),
        sa.Column(
            "fact_ids", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_invoice_lines_invoice_id_invoices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_lines")),
    )
    with op.batch_alter_table("invoice_lines", schema=None) as batch_op:
        batch_op.create_index(
            "ix_invoice_lines_invoice_id_position", ["invoice_id", "position"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("invoice_lines", schema=None) as batch_op:
        batch_op.drop_index("ix_invoice_lines_invoice_id_position")
    op.drop_table("invoice_lines")
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_index("ix_invoices_org_id_id")
    op.drop_table("invoices")
