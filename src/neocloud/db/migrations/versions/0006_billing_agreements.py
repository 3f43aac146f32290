"""billing agreements: contracts, credit grants, credit notes, line references

Revision ID: 0006_billing_agreements
Revises: 0005_billing_invoices
Create Date: 2026-11-28 20:35:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import neocloud.db.types

revision: str = "0006_billing_agreements"
down_revision: str | None = "0005_billing_invoices"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_AMOUNT = neocloud.db.types.Amount(precision=20, scale=6)
_TIME = neocloud.db.types.UtcDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "billing_contracts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("start_at", _TIME, nullable=False),
        sa.Column("end_at", _TIME, nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", _AMOUNT, nullable=True),
        sa.Column("gpu_model", sa.String(length=32), nullable=True),
        sa.Column("gpus", sa.Integer(), nullable=True),
        sa.Column("rate", _AMOUNT, nullable=True),
        sa.Column("reservation_id", sa.String(length=40), nullable=True),
        sa.Column("term", sa.String(length=8), nullable=True),
        sa.Column("billing", sa.String(length=8), nullable=True),
        sa.Column("counterparty", sa.String(length=255), nullable=True),
        sa.Column("note", sa.String(length=1000), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_contracts")),
    )
    with op.batch_alter_table("billing_contracts", schema=None) as batch_op:
        batch_op.create_index("ix_billing_contracts_org_id_id", ["org_id", "id"], unique=False)
        batch_op.create_index("ix_billing_contracts_kind_end_at", ["kind", "end_at"], unique=False)
    op.create_table(
        "credit_grants",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("amount", _AMOUNT, nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("expires_at", _TIME, nullable=True),
        sa.Column("paid", sa.Boolean(), nullable=False),
        sa.Column("note", sa.String(length=1000), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_grants")),
    )
    with op.batch_alter_table("credit_grants", schema=None) as batch_op:
        batch_op.create_index("ix_credit_grants_org_id_id", ["org_id", "id"], unique=False)
    op.create_table(
        "credit_notes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("invoice_id", sa.String(length=40), nullable=False),
        sa.Column("usage_period", sa.String(length=7), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("total", _AMOUNT, nullable=False),
        sa.Column(
            "lines", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("created_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_credit_notes_invoice_id_invoices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_notes")),
    )
    with op.batch_alter_table("credit_notes", schema=None) as batch_op:
        batch_op.create_index("ix_credit_notes_org_id_id", ["org_id", "id"], unique=False)
    op.add_column("invoice_lines", sa.Column("reference_id", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("invoice_lines", schema=None) as batch_op:
        batch_op.drop_column("reference_id")
    with op.batch_alter_table("credit_notes", schema=None) as batch_op:
        batch_op.drop_index("ix_credit_notes_org_id_id")
    op.drop_table("credit_notes")
    with op.batch_alter_table("credit_grants", schema=None) as batch_op:
        batch_op.drop_index("ix_credit_grants_org_id_id")
    op.drop_table("credit_grants")
    with op.batch_alter_table("billing_contracts", schema=None) as batch_op:
        batch_op.drop_index("ix_billing_contracts_kind_end_at")
        batch_op.drop_index("ix_billing_contracts_org_id_id")
    op.drop_table("billing_contracts")
