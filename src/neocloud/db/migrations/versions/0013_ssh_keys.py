"""tenancy: tenants' SSH public keys, per org, owned by the user who added them

Revision ID: 0013_ssh_keys
Revises: 0011_audit_outsider
Create Date: 2026-12-08 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import neocloud.db.types

revision: str = "0013_ssh_keys"
down_revision: str | tuple[str, ...] | None = "0011_audit_outsider"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ssh_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("key_type", sa.String(length=32), nullable=False),
        sa.Column("bits", sa.Integer(), nullable=False),
        sa.Column("created_at", neocloud.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_ssh_keys_created_by_users")
        ),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_ssh_keys_org_id_orgs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ssh_keys")),
        sa.UniqueConstraint("org_id", "fingerprint", name="uq_ssh_keys_org_id_fingerprint"),
        sa.UniqueConstraint("org_id", "name", name="uq_ssh_keys_org_id_name"),
    )
    with op.batch_alter_table("ssh_keys") as batch:
        batch.create_index(batch.f("ix_ssh_keys_created_by"), ["created_by"], unique=False)
        batch.create_index(batch.f("ix_ssh_keys_org_id"), ["org_id"], unique=False)


def downgrade() -> None:
    op.drop_table("ssh_keys")
