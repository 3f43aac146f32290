"""databases: managed PostgreSQL on service nodes (databases, backups, usage, hosts, CA)

Revision ID: 0018_databases
Revises: 0017_storage
Create Date: 2026-12-06 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from neocloud.db.types import Json, UtcDateTime

revision: str = "0018_databases"
down_revision: str | tuple[str, ...] | None = "0017_storage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(40)
LIVE = sa.text("state != 'deleted'")


def upgrade() -> None:
    op.create_table(
        "databases",
        sa.Column("id", ID, primary_key=True),
        sa.Column("org_id", ID, nullable=False),
        sa.Column("project_id", ID, nullable=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("version", sa.String(8), nullable=False),
        sa.Column("preset", sa.String(16), nullable=False),
        sa.Column("storage_gib", sa.Integer(), nullable=False),
        sa.Column("db_user", sa.String(63), nullable=False),
        sa.Column("allowed_cidrs", Json, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(1000), nullable=True),
        sa.Column("node_id", ID, nullable=True),
        sa.Column("host", sa.String(253), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("os_user", sa.String(32), nullable=True),
        sa.Column("sealed_password", sa.Text(), nullable=False),
        sa.Column("hba_cidrs", Json, nullable=True),
        sa.Column("restore_from", ID, nullable=True),
        sa.Column("health", sa.String(16), nullable=True),
        sa.Column("health_at", UtcDateTime(), nullable=True),
        sa.Column("used_mib", sa.Integer(), nullable=True),
        sa.Column("last_backup_at", UtcDateTime(), nullable=True),
        sa.Column("lease_until", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("running_at", UtcDateTime(), nullable=True),
        sa.Column("deleted_at", UtcDateTime(), nullable=True),
    )
    op.create_index("ix_databases_org_id_id", "databases", ["org_id", "id"])
    op.create_index("ix_databases_state", "databases", ["state"])
    op.create_index(
        "uq_databases_org_name_live",
        "databases",
        ["org_id", "name"],
        unique=True,
        sqlite_where=LIVE,
        postgresql_where=LIVE,
    )
    op.create_index(
        "uq_databases_node_port_live",
        "databases",
        ["node_id", "port"],
        unique=True,
        sqlite_where=LIVE,
        postgresql_where=LIVE,
    )
    op.create_table(
        "database_backups",
        sa.Column("id", ID, primary_key=True),
        sa.Column("database_id", ID, nullable=False),
        sa.Column("org_id", ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(1000), nullable=True),
        sa.Column("node_id", ID, nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("completed_at", UtcDateTime(), nullable=True),
    )
    op.create_index("ix_database_backups_database_id_id", "database_backups", ["database_id", "id"])
    op.create_table(
        "database_usage",
        sa.Column("id", ID, primary_key=True),
        sa.Column("database_id", ID, nullable=False),
        sa.Column("org_id", ID, nullable=False),
        sa.Column("project_id", ID, nullable=True),
        sa.Column("preset", sa.String(16), nullable=False),
        sa.Column("storage_gib", sa.Integer(), nullable=False),
        sa.Column("start_at", UtcDateTime(), nullable=False),
        sa.Column("end_at", UtcDateTime(), nullable=True),
    )
    op.create_index("ix_database_usage_database_id", "database_usage", ["database_id"])
    op.create_index("ix_database_usage_org_id_start_at", "database_usage", ["org_id", "start_at"])
    op.create_table(
        "database_hosts",
        sa.Column("node_id", ID, primary_key=True),
        sa.Column("versions", Json, nullable=False),
        sa.Column("reason", sa.String(1000), nullable=True),
        sa.Column("probed_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "database_ca",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("cert_pem", sa.Text(), nullable=False),
        sa.Column("sealed_key", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("database_ca")
    op.drop_table("database_hosts")
    op.drop_index("ix_database_usage_org_id_start_at", "database_usage")
    op.drop_index("ix_database_usage_database_id", "database_usage")
    op.drop_table("database_usage")
    op.drop_index("ix_database_backups_database_id_id", "database_backups")
    op.drop_table("database_backups")
    for name in (
        "uq_databases_node_port_live",
        "uq_databases_org_name_live",
        "ix_databases_state",
        "ix_databases_org_id_id",
    ):
        op.drop_index(name, "databases")
    op.drop_table("databases")
