"""fleet: node roles (gpu, storage, service); storage pools and shared filesystems

Revision ID: 0017_storage
Revises: 0016_slurm
Create Date: 2026-12-06 07:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017_storage"
down_revision: str | tuple[str, ...] | None = "0016_slurm"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("role", sa.String(16), nullable=False, server_default="gpu"))
        batch.create_index("ix_nodes_role_id", ["role", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_index("ix_nodes_role_id")
        batch.drop_column("role")
