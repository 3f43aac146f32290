"""invoice lines carry token counts and prices per 1M (Studio token lines)

Revision ID: 0008_invoice_line_tokens
Revises: 0007_merge
Create Date: 2026-11-28 21:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import neocloud.db.types

revision: str = "0008_invoice_line_tokens"
down_revision: str | None = "0007_merge"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_AMOUNT = neocloud.db.types.Amount(precision=20, scale=6)


def upgrade() -> None:
    with op.batch_alter_table("invoice_lines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("input_tokens", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("output_tokens", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("input_price_per_1m", _AMOUNT, nullable=True))
        batch_op.add_column(sa.Column("output_price_per_1m", _AMOUNT, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("invoice_lines", schema=None) as batch_op:
        batch_op.drop_column("output_price_per_1m")
        batch_op.drop_column("input_price_per_1m")
        batch_op.drop_column("output_tokens")
        batch_op.drop_column("input_tokens")
