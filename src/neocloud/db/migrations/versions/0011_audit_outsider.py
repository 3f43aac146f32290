"""tenancy: audit events say whether they record an outsider's attempt

An attempt with no valid key, or on an org the caller may not act in, is kept in the caller's
own log (no key: the operator's), never the target org's, and flagged (issue 13, finding 4).

Revision ID: 0011_audit_outsider
Revises: 0010_credentials_version
Create Date: 2026-12-06 02:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_audit_outsider"
down_revision: str | tuple[str, ...] | None = "0010_credentials_version"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(
            sa.Column("outsider", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("outsider")
