"""compute: managed Slurm heals (the cluster's sealed munge key, Slurm's nodes, a member's
release by Slurm)

Revision ID: 0022_slurm_heal
Revises: 0021_nodes2
Create Date: 2026-12-06 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from neocloud.db.types import Json, UtcDateTime

revision: str = "0022_slurm_heal"
down_revision: str | tuple[str, ...] | None = "0021_nodes2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clusters") as batch:
        batch.add_column(sa.Column("scheduler_key", sa.Text(), nullable=True))
        batch.add_column(sa.Column("scheduler_nodes", Json, nullable=True))
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("scheduler_released_at", UtcDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("scheduler_released_at")
    with op.batch_alter_table("clusters") as batch:
        batch.drop_column("scheduler_nodes")
        batch.drop_column("scheduler_key")
