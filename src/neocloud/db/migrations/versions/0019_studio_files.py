"""studio: files (/v1/files) and fine-tuning jobs

Revision ID: 0019_studio_files
Revises: 0018_databases
Create Date: 2026-12-06 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from neocloud.db.types import Json, UtcDateTime

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
    op.create_table(
        "studio_ft_jobs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("base_path", sa.String(length=1000), nullable=False),
        sa.Column("training_file", sa.String(length=40), nullable=False),
        sa.Column("validation_file", sa.String(length=40), nullable=True),
        sa.Column("suffix", sa.String(length=64), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("hyperparameters", Json, nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("error", Json, nullable=True),
        sa.Column("fine_tuned_model", sa.String(length=256), nullable=True),
        sa.Column("trained_tokens", sa.BigInteger(), nullable=True),
        sa.Column("result_files", Json, nullable=False),
        sa.Column("epochs_done", sa.Integer(), nullable=False),
        sa.Column("runner", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_token", sa.String(length=40), nullable=True),
        sa.Column("lease_until", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_studio_ft_jobs_org_id_orgs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studio_ft_jobs")),
    )
    op.create_index(
        "ix_studio_ft_jobs_org_id_created_at", "studio_ft_jobs", ["org_id", "created_at"]
    )
    op.create_index("ix_studio_ft_jobs_status", "studio_ft_jobs", ["status"])
    op.create_table(
        "studio_ft_events",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("type", sa.String(length=8), nullable=False),
        sa.Column("message", sa.String(length=1000), nullable=False),
        sa.Column("data", Json, nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["studio_ft_jobs.id"],
            name=op.f("fk_studio_ft_events_job_id_studio_ft_jobs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studio_ft_events")),
        sa.UniqueConstraint("job_id", "seq", name=op.f("uq_studio_ft_events_job_id")),
    )
    op.create_table(
        "studio_ft_checkpoints",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("step_number", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("metrics", Json, nullable=False),
        sa.Column("fine_tuned_model_checkpoint", sa.String(length=300), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["studio_ft_jobs.id"],
            name=op.f("fk_studio_ft_checkpoints_job_id_studio_ft_jobs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studio_ft_checkpoints")),
        sa.UniqueConstraint("job_id", "step_number", name=op.f("uq_studio_ft_checkpoints_job_id")),
    )
    op.create_table(
        "studio_ft_models",
        sa.Column("id", sa.String(length=256), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("base_model", sa.String(length=128), nullable=False),
        sa.Column("base_path", sa.String(length=1000), nullable=False),
        sa.Column("adapter_path", sa.String(length=1000), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_studio_ft_models_org_id_orgs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studio_ft_models")),
    )
    op.create_index("ix_studio_ft_models_org_id", "studio_ft_models", ["org_id"])


def downgrade() -> None:
    op.drop_index("ix_studio_ft_models_org_id", table_name="studio_ft_models")
    op.drop_table("studio_ft_models")
    op.drop_table("studio_ft_checkpoints")
    op.drop_table("studio_ft_events")
    op.drop_index("ix_studio_ft_jobs_status", table_name="studio_ft_jobs")
    op.drop_index("ix_studio_ft_jobs_org_id_created_at", table_name="studio_ft_jobs")
    op.drop_table("studio_ft_jobs")
    op.drop_index("ix_studio_files_org_id_created_at", table_name="studio_files")
    op.drop_table("studio_files")
