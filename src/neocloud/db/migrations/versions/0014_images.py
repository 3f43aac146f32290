"""compute: the operator's catalog of OS images (name, OS, CUDA versions, login user,
cloud-init, the drivers that can install it, one default)

Revision ID: 0014_images
Revises: 0013_ssh_keys
Create Date: 2026-12-08 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from neocloud.db.types import Json, UtcDateTime

revision: str = "0014_images"
down_revision: str | tuple[str, ...] | None = "0013_ssh_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("os", sa.String(length=64), nullable=False),
        sa.Column("cuda_driver", sa.String(length=32), nullable=True),
        sa.Column("cuda_toolkit", sa.String(length=32), nullable=True),
        sa.Column("login_user", sa.String(length=32), nullable=False),
        sa.Column("cloud_init", sa.Boolean(), nullable=False),
        sa.Column("drivers", Json, nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=True),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("retired_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_images")),
        sa.UniqueConstraint("is_default", name=op.f("uq_images_is_default")),
    )


def downgrade() -> None:
    op.drop_table("images")
