"""compute queue: instances and clusters may wait for capacity until a deadline

Revision ID: 0006_compute_queue
Revises: 0005_billing_invoices
Create Date: 2026-11-28 20:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import neocloud.db.types

revision: str = "0006_compute_queue"
down_revision: str | None = "0005_billing_invoices"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("instances", "clusters"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column(
                    "queue_until", neocloud.db.types.UtcDateTime(timezone=True), nullable=True
                )
            )


def downgrade() -> None:
    for table in ("clusters", "instances"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("queue_until")
