"""studio: a fine-tuning job's MLflow run (a resumed job goes on with the same run)

Revision ID: 0024_ft_mlflow
Revises: 0023_studio_capacity
Create Date: 2026-12-06 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024_ft_mlflow"
down_revision: str | tuple[str, ...] | None = "0023_studio_capacity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("studio_ft_jobs") as batch:
        batch.add_column(sa.Column("mlflow_run_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("studio_ft_jobs") as batch:
        batch.drop_column("mlflow_run_id")
