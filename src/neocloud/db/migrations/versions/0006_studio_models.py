"""studio: models registered by the operator (local checkpoints and upstreams)

Revision ID: 0006_studio_models
Revises: 0005_billing_invoices
Create Date: 2026-11-28 20:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import neocloud.db.types

revision: str = "0006_studio_models"
down_revision: str | None = "0005_billing_invoices"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "studio_models",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=True),
        sa.Column(
            "upstream_urls",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=True,
        ),
        sa.Column("upstream_model", sa.String(length=256), nullable=True),
        sa.Column("context_length", sa.Integer(), nullable=False),
        sa.Column("input_price_per_m", neocloud.db.types.Amount(), nullable=False),
        sa.Column("output_price_per_m", neocloud.db.types.Amount(), nullable=False),
        sa.Column("flavor", sa.String(length=16), nullable=False),
        sa.Column("deprecated_on", sa.Date(), nullable=True),
        sa.Column("created_by", sa.String(length=40), nullable=False),
        sa.Column("created_at", neocloud.db.types.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studio_models")),
    )


def downgrade() -> None:
    op.drop_table("studio_models")
