"""Storage rows: pools, filesystems, their attachments and per-member mounts, and the size
intervals billing meters."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from neocloud.db.base import Base
from neocloud.db.types import Json, UtcDateTime

ID = sa.String(40)


class StoragePoolRow(Base):
    """Storage nodes the operator groups into one pool of one backend."""

    __tablename__ = "storage_pools"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(63), unique=True)
    backend: Mapped[str] = mapped_column(sa.String(16))
    node_ids: Mapped[list[str]] = mapped_column(Json)  # in brick order
    replica: Mapped[int] = mapped_column(sa.Integer)
    brick_root: Mapped[str] = mapped_column(sa.String(200))
    state: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class FilesystemRow(Base):
    """A tenant's shared filesystem: ``size_gib`` is what was asked, ``applied_gib`` what the
    backend enforces now; ``used_bytes`` what it held when last measured."""

    __tablename__ = "filesystems"
    __table_args__ = (
        sa.Index("ix_filesystems_org_id", "org_id", "id"),
        sa.Index("ix_filesystems_state", "state"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ID)
    project_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    name: Mapped[str] = mapped_column(sa.String(63))
    pool_id: Mapped[str] = mapped_column(ID)
    size_gib: Mapped[int] = mapped_column(sa.Integer)
    applied_gib: Mapped[int] = mapped_column(sa.Integer, default=0)
    volume: Mapped[str] = mapped_column(sa.String(63))
    state: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    used_bytes: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    created_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class FsAttachmentRow(Base):
    """A filesystem attached to one instance or to every member of one cluster."""

    __tablename__ = "fs_attachments"
    __table_args__ = (sa.Index("ix_fs_attachments_fs_state", "filesystem_id", "state"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    filesystem_id: Mapped[str] = mapped_column(ID)
    org_id: Mapped[str] = mapped_column(ID)
    instance_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    cluster_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    mount_path: Mapped[str] = mapped_column(sa.String(200))
    read_only: Mapped[bool] = mapped_column(sa.Boolean)
    state: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    detached_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class FsMountRow(Base):
    """The attachment's mount on one member (instance) and its node."""

    __tablename__ = "fs_mounts"

    attachment_id: Mapped[str] = mapped_column(ID, primary_key=True)
    instance_id: Mapped[str] = mapped_column(ID, primary_key=True)
    node_id: Mapped[str] = mapped_column(ID)
    state: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    simulated: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    detail: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    mounted_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class FsSizeIntervalRow(Base):
    """The billing fact: ``size_gib`` held by ``org_id`` during ``[start_at, end_at)``; a
    resize ends one interval and starts the next, a delete ends the last."""

    __tablename__ = "fs_size_intervals"
    __table_args__ = (sa.Index("ix_fs_size_intervals_org_start", "org_id", "start_at"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    filesystem_id: Mapped[str] = mapped_column(ID)
    org_id: Mapped[str] = mapped_column(ID)
    size_gib: Mapped[int] = mapped_column(sa.Integer)
    start_at: Mapped[datetime] = mapped_column(UtcDateTime())
    end_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
