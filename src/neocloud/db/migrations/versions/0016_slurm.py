"""compute: a managed scheduler (Slurm) on a cluster's members

Revision ID: 0016_slurm
Revises: 0015_agent
Create Date: 2026-12-20 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from neocloud.db.types import UtcDateTime

revision: str = "0016_slurm"
down_revision: str | tuple[str, ...] | None = "0015_agent"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clusters") as batch:
        batch.add_column(sa.Column("scheduler", sa.String(16), nullable=True))
        batch.add_column(sa.Column("scheduler_state", sa.String(16), nullable=True))
        batch.add_column(sa.Column("scheduler_reason", sa.String(1000), nullable=True))
        batch.add_column(sa.Column("scheduler_controller", sa.String(40), nullable=True))
        batch.add_column(sa.Column("scheduler_simulated", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("scheduler_lease_until", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("scheduler_ready_at", UtcDateTime(), nullable=True))
        batch.create_index("ix_clusters_scheduler_state", ["scheduler_state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("clusters") as batch:
        batch.drop_index("ix_clusters_scheduler_state")
        for name in (
            "scheduler_ready_at",
            "scheduler_lease_until",
            "scheduler_simulated",
            "scheduler_controller",
            "scheduler_reason",
            "scheduler_state",
            "scheduler",
        ):
            batch.drop_column(name)
