"""studio: key rate-limit overrides and org budgets; usage log rows keyed by request

Revision ID: 0006_studio_limits
Revises: 0005_billing_invoices
Create Date: 2026-11-28 20:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import neocloud.db.types

revision: str = "0006_studio_limits"
down_revision: str | None = "0005_billing_invoices"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "studio_key_limits",
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("requests_per_minute", sa.Integer(), nullable=True),
        sa.Column("tokens_per_minute", sa.Integer(), nullable=True),
        sa.Column("updated_at", neocloud.db.types.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name=op.f("fk_studio_key_limits_key_id_api_keys")
        ),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_studio_key_limits")),
    )
    op.create_table(
        "studio_org_budgets",
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("monthly_token_limit", sa.BigInteger(), nullable=True),
        sa.Column("suspended", sa.Boolean(), nullable=False),
        sa.Column("updated_at", neocloud.db.types.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_studio_org_budgets_org_id_orgs")
        ),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_studio_org_budgets")),
    )


def downgrade() -> None:
    op.drop_table("studio_org_budgets")
    op.drop_table("studio_key_limits")
