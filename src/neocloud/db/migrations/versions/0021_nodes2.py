"""fleet: cloud-init seed images served to a node's BMC by one-time token

Revision ID: 0021_nodes2
Revises: 0020_batches
Create Date: 2026-12-06 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from neocloud.db.types import UtcDateTime

revision: str = "0021_nodes2"
down_revision: str | tuple[str, ...] | None = "0020_batches"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "boot_seeds",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "node_id", sa.String(40), sa.ForeignKey("nodes.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("workload_id", sa.String(64), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("fetches", sa.Integer(), nullable=False),
    )
    op.create_index("ix_boot_seeds_node_id", "boot_seeds", ["node_id"])


def downgrade() -> None:
    op.drop_index("ix_boot_seeds_node_id", table_name="boot_seeds")
    op.drop_table("boot_seeds")
