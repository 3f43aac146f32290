"""Managed databases' rows: databases, their backups, their billable spans, the service nodes'
PostgreSQL versions, and the platform's database CA (its key sealed)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from neocloud.db.base import Base
from neocloud.db.types import Json, UtcDateTime

ID = sa.String(40)
LIVE = sa.text("state != 'deleted'")


class DatabaseRow(Base):
    """One tenant database: what was asked (name, version, preset, storage, allow-list), where
    it runs (node, host address, port, OS user), its state and health. ``sealed_password``:
    the tenant role's password sealed with the platform's secret box (never returned again)."""

    __tablename__ = "databases"
    __table_args__ = (
        sa.Index("ix_databases_org_id_id", "org_id", "id"),
        sa.Index("ix_databases_state", "state"),
        # A live database's name is unique in its org; a node's port belongs to one database.
        sa.Index(
            "uq_databases_org_name_live",
            "org_id",
            "name",
            unique=True,
            sqlite_where=LIVE,
            postgresql_where=LIVE,
        ),
        sa.Index(
            "uq_databases_node_port_live",
            "node_id",
            "port",
            unique=True,
            sqlite_where=LIVE,
            postgresql_where=LIVE,
        ),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ID)
    project_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    name: Mapped[str] = mapped_column(sa.String(63))
    version: Mapped[str] = mapped_column(sa.String(8))
    preset: Mapped[str] = mapped_column(sa.String(16))
    storage_gib: Mapped[int] = mapped_column(sa.Integer)
    db_user: Mapped[str] = mapped_column(sa.String(63))
    allowed_cidrs: Mapped[list[str]] = mapped_column(Json)
    state: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    node_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    host: Mapped[str | None] = mapped_column(sa.String(253), nullable=True)
    port: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    os_user: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    sealed_password: Mapped[str] = mapped_column(sa.Text)
    hba_cidrs: Mapped[list[str] | None] = mapped_column(Json, nullable=True)  # as applied
    restore_from: Mapped[str | None] = mapped_column(ID, nullable=True)  # a backup id
    health: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    health_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    used_mib: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    last_backup_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    running_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class DatabaseBackupRow(Base):
    """A ``pg_dump`` of a database, kept on its node (``manual`` or ``scheduled``)."""

    __tablename__ = "database_backups"
    __table_args__ = (sa.Index("ix_database_backups_database_id_id", "database_id", "id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    database_id: Mapped[str] = mapped_column(ID)
    org_id: Mapped[str] = mapped_column(ID)
    kind: Mapped[str] = mapped_column(sa.String(16))
    state: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    node_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    size_bytes: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class DatabaseUsageRow(Base):
    """A billable span: the database ran with ``preset`` and ``storage_gib`` during
    ``[start_at, end_at)`` (``end_at`` None: still running). Failed time has no span."""

    __tablename__ = "database_usage"
    __table_args__ = (sa.Index("ix_database_usage_org_id_start_at", "org_id", "start_at"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    database_id: Mapped[str] = mapped_column(ID, index=True)
    org_id: Mapped[str] = mapped_column(ID)
    project_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    preset: Mapped[str] = mapped_column(sa.String(16))
    storage_gib: Mapped[int] = mapped_column(sa.Integer)
    start_at: Mapped[datetime] = mapped_column(UtcDateTime())
    end_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class DatabaseHostRow(Base):
    """What a service node offers databases: the PostgreSQL major versions its probe found."""

    __tablename__ = "database_hosts"

    node_id: Mapped[str] = mapped_column(ID, primary_key=True)
    versions: Mapped[list[str]] = mapped_column(Json)
    reason: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    probed_at: Mapped[datetime] = mapped_column(UtcDateTime())


class DatabaseCaRow(Base):
    """The platform's database CA: its certificate (public) and its key, sealed."""

    __tablename__ = "database_ca"

    id: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    cert_pem: Mapped[str] = mapped_column(sa.Text)
    sealed_key: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
