"""fleet: node roles (gpu, storage, service); storage pools and shared filesystems

Revision ID: 0017_storage
Revises: 0016_slurm
Create Date: 2026-12-06 07:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from neocloud.db.types import Json, UtcDateTime

revision: str = "0017_storage"
down_revision: str | tuple[str, ...] | None = "0016_slurm"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("role", sa.String(16), nullable=False, server_default="gpu"))
        batch.create_index("ix_nodes_role_id", ["role", "id"], unique=False)
    op.create_table(
        "storage_pools",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("backend", sa.String(16), nullable=False),
        sa.Column("node_ids", Json, nullable=False),
        sa.Column("replica", sa.Integer(), nullable=False),
        sa.Column("brick_root", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(1000), nullable=True),
        sa.Column("lease_until", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "filesystems",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("project_id", sa.String(40), nullable=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("pool_id", sa.String(40), nullable=False),
        sa.Column("size_gib", sa.Integer(), nullable=False),
        sa.Column("applied_gib", sa.Integer(), nullable=False),
        sa.Column("volume", sa.String(63), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(1000), nullable=True),
        sa.Column("used_bytes", sa.BigInteger(), nullable=True),
        sa.Column("used_at", UtcDateTime(), nullable=True),
        sa.Column("lease_until", UtcDateTime(), nullable=True),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("deleted_at", UtcDateTime(), nullable=True),
    )
    op.create_index("ix_filesystems_org_id", "filesystems", ["org_id", "id"])
    op.create_index("ix_filesystems_state", "filesystems", ["state"])
    op.create_table(
        "fs_attachments",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("filesystem_id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("instance_id", sa.String(40), nullable=True),
        sa.Column("cluster_id", sa.String(40), nullable=True),
        sa.Column("mount_path", sa.String(200), nullable=False),
        sa.Column("read_only", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(1000), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("detached_at", UtcDateTime(), nullable=True),
    )
    op.create_index("ix_fs_attachments_fs_state", "fs_attachments", ["filesystem_id", "state"])
    op.create_table(
        "fs_mounts",
        sa.Column("attachment_id", sa.String(40), primary_key=True),
        sa.Column("instance_id", sa.String(40), primary_key=True),
        sa.Column("node_id", sa.String(40), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(1000), nullable=True),
        sa.Column("simulated", sa.Boolean(), nullable=False),
        sa.Column("detail", Json, nullable=True),
        sa.Column("mounted_at", UtcDateTime(), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "fs_size_intervals",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("filesystem_id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("size_gib", sa.Integer(), nullable=False),
        sa.Column("start_at", UtcDateTime(), nullable=False),
        sa.Column("end_at", UtcDateTime(), nullable=True),
    )
    op.create_index("ix_fs_size_intervals_org_start", "fs_size_intervals", ["org_id", "start_at"])


def downgrade() -> None:
    for table in (
        "fs_size_intervals",
        "fs_mounts",
        "fs_attachments",
        "filesystems",
        "storage_pools",
    ):
        op.drop_table(table)
    with op.batch_alter_table("nodes") as batch:
        batch.drop_index("ix_nodes_role_id")
        batch.drop_column("role")
