"""compute and fleet: what real nodes need — a driver per node with its settings and sealed
credentials; an instance's login user, key ids, access details and a pending reboot

Revision ID: 0012_real_nodes
Revises: 0011_audit_outsider
Create Date: 2026-12-06 04:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from neocloud.db.types import Json, UtcDateTime

revision: str = "0012_real_nodes"
down_revision: str | tuple[str, ...] | None = "0011_audit_outsider"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("driver", sa.String(16), server_default="sim", nullable=False))
        batch.add_column(sa.Column("driver_config", Json, nullable=True))
        batch.add_column(sa.Column("driver_secret", sa.Text(), nullable=True))
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("ssh_key_ids", Json, nullable=True))
        batch.add_column(sa.Column("login_user", sa.String(32), nullable=True))
        batch.add_column(sa.Column("access", Json, nullable=True))
        batch.add_column(sa.Column("reboot_requested_at", UtcDateTime(), nullable=True))
    with op.batch_alter_table("clusters") as batch:
        batch.add_column(sa.Column("user_data", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("clusters") as batch:
        batch.drop_column("user_data")
    with op.batch_alter_table("instances") as batch:
        for name in ("reboot_requested_at", "access", "login_user", "ssh_key_ids"):
            batch.drop_column(name)
    with op.batch_alter_table("nodes") as batch:
        for name in ("driver_secret", "driver_config", "driver"):
            batch.drop_column(name)
