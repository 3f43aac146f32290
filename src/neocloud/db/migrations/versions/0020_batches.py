"""studio: batches (/v1/batches) and their finished requests

Revision ID: 0020_batches
Revises: 0019_studio_files
Create Date: 2026-12-06 08:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from neocloud.db.types import Json, UtcDateTime

revision: str = "0020_batches"
down_revision: str | tuple[str, ...] | None = "0019_studio_files"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "studio_batches",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("endpoint", sa.String(length=64), nullable=False),
        sa.Column("input_file_id", sa.String(length=40), nullable=False),
        sa.Column("completion_window", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("metadata", Json, nullable=True),
        sa.Column("errors", Json, nullable=True),
        sa.Column("output_file_id", sa.String(length=40), nullable=True),
        sa.Column("error_file_id", sa.String(length=40), nullable=True),
        sa.Column("request_total", sa.Integer(), nullable=False),
        sa.Column("request_completed", sa.Integer(), nullable=False),
        sa.Column("request_failed", sa.Integer(), nullable=False),
        sa.Column("next_index", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("in_progress_at", UtcDateTime(), nullable=True),
        sa.Column("finalizing_at", UtcDateTime(), nullable=True),
        sa.Column("completed_at", UtcDateTime(), nullable=True),
        sa.Column("failed_at", UtcDateTime(), nullable=True),
        sa.Column("expired_at", UtcDateTime(), nullable=True),
        sa.Column("cancelling_at", UtcDateTime(), nullable=True),
        sa.Column("cancelled_at", UtcDateTime(), nullable=True),
        sa.Column("lease_token", sa.String(length=40), nullable=True),
        sa.Column("lease_expires_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_studio_batches_org_id_orgs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studio_batches")),
    )
    op.create_index(
        "ix_studio_batches_org_id_created_at", "studio_batches", ["org_id", "created_at"]
    )
    op.create_index("ix_studio_batches_status", "studio_batches", ["status"])
    op.create_table(
        "studio_batch_results",
        sa.Column("batch_id", sa.String(length=40), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["studio_batches.id"],
            name=op.f("fk_studio_batch_results_batch_id_studio_batches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("batch_id", "index", name=op.f("pk_studio_batch_results")),
    )


def downgrade() -> None:
    op.drop_table("studio_batch_results")
    op.drop_index("ix_studio_batches_status", table_name="studio_batches")
    op.drop_index("ix_studio_batches_org_id_created_at", table_name="studio_batches")
    op.drop_table("studio_batches")
