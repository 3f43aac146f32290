"""studio: files (/v1/files) and fine-tuning jobs

Revision ID: 0019_studio_files
Revises: 0018_databases
Create Date: 2026-12-06 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from neocloud.db.types import UtcDateTime

revision: str = "0019_studio_files"
down_revision: str | tuple[str, ...] | None = "0018_databases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "studio_files",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("storage_key", sa.String(length=200), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_studio_files_org_id_orgs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studio_files")),
    )
    op.create_index("ix_studio_files_org_id_created_at", "studio_files", ["org_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_studio_files_org_id_created_at", table_name="studio_files")
    op.drop_table("studio_files")
