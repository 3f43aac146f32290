"""tenancy: the credentials version, bumped by every write that changes what a key may do

Revision ID: 0010_credentials_version
Revises: 0009_merge
Create Date: 2026-11-28 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_credentials_version"
down_revision: str | tuple[str, ...] | None = "0009_merge"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "credentials_version",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credentials_version")),
    )
    # The one row; the bump also creates it should it be missing (tests empty every table).
    op.bulk_insert(table, [{"id": 1, "version": 0}])


def downgrade() -> None:
    op.drop_table("credentials_version")
