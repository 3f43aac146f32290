"""api: an Idempotency-Key's claim is a lease (locked_until, lease_token) and records, in the
transaction of the request's first committed write, that the request took effect (effect_at)

Revision ID: 0025_idem_lease
Revises: 0024_ft_mlflow
Create Date: 2026-12-06 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from neocloud.db.types import UtcDateTime

revision: str = "0025_idem_lease"
down_revision: str | tuple[str, ...] | None = "0024_ft_mlflow"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Rows claimed before the upgrade have no lease: NULL reads as expired (the platform is
    # stopped to migrate, so no request holds them), and no effect_at: a retry may run them.
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("locked_until", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("lease_token", sa.String(32), nullable=True))
        batch.add_column(sa.Column("effect_at", UtcDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("effect_at")
        batch.drop_column("lease_token")
        batch.drop_column("locked_until")
