"""studio jobs on fleet capacity: an instance and its allocation carry the studio job they run
(``studio_job_id``); a batch waiting for capacity says why (``queued_reason``)

Revision ID: 0023_studio_capacity
Revises: 0022_slurm_heal
Create Date: 2026-12-06 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023_studio_capacity"
down_revision: str | tuple[str, ...] | None = "0022_slurm_heal"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("studio_job_id", sa.String(40), nullable=True))
        batch.create_index("ix_instances_studio_job_id", ["studio_job_id"])
    with op.batch_alter_table("allocations") as batch:
        batch.add_column(sa.Column("studio_job_id", sa.String(40), nullable=True))
    with op.batch_alter_table("studio_batches") as batch:
        batch.add_column(sa.Column("queued_reason", sa.String(500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("studio_batches") as batch:
        batch.drop_column("queued_reason")
    with op.batch_alter_table("allocations") as batch:
        batch.drop_column("studio_job_id")
    with op.batch_alter_table("instances") as batch:
        batch.drop_index("ix_instances_studio_job_id")
        batch.drop_column("studio_job_id")
