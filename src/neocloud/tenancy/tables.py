"""Tenancy tables: orgs, projects, users, memberships, API keys (and the credentials version),
quotas and the audit log."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from neocloud.db.base import Base
from neocloud.db.types import UtcDateTime

ID = sa.String(40)


class OrgRow(Base):
    __tablename__ = "orgs"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    slug: Mapped[str] = mapped_column(sa.String(63), unique=True)
    is_operator: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    # Exactly one operator org: a partial unique index would differ per backend, so the
    # column holds True or NULL and a plain unique constraint allows one True.
    operator_marker: Mapped[bool | None] = mapped_column(sa.Boolean, unique=True, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ProjectRow(Base):
    __tablename__ = "projects"
    __table_args__ = (sa.UniqueConstraint("org_id", "name", name="uq_projects_org_id_name"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("orgs.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str] = mapped_column(sa.String(1000), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class MembershipRow(Base):
    __tablename__ = "memberships"
    __table_args__ = (
        sa.UniqueConstraint("org_id", "user_id", name="uq_memberships_org_id_user_id"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("orgs.id"), index=True)
    user_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("users.id"), index=True)
    role: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("orgs.id"), index=True)
    user_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    prefix: Mapped[str] = mapped_column(sa.String(16))
    secret_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    role: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)  # cap, if any
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class CredentialsVersionRow(Base):
    """One row (``id`` 1): a counter every write that changes what a key may do bumps (a key
    revoked, a member removed or their role changed), so that caches of principals in every
    process can tell, with one primary-key read, that theirs may be stale."""

    __tablename__ = "credentials_version"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(sa.BigInteger)


class QuotaDefaultRow(Base):
    """The registered default quota of one GPU model, for every org without an override."""

    __tablename__ = "quota_defaults"

    gpu_model: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    limit_gpus: Mapped[int] = mapped_column(sa.Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class QuotaRow(Base):
    """An org's override of one GPU model's quota."""

    __tablename__ = "quotas"
    __table_args__ = (
        sa.UniqueConstraint("org_id", "gpu_model", name="uq_quotas_org_id_gpu_model"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("orgs.id"), index=True)
    gpu_model: Mapped[str] = mapped_column(sa.String(64))
    limit_gpus: Mapped[int] = mapped_column(sa.Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AuditEventRow(Base):
    """One mutating API call, successful or not. Never holds bodies or secrets."""

    __tablename__ = "audit_events"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    actor_key_id: Mapped[str | None] = mapped_column(ID, nullable=True, index=True)
    actor_user_id: Mapped[str | None] = mapped_column(ID, nullable=True, index=True)
    org_id: Mapped[str | None] = mapped_column(ID, nullable=True, index=True)
    method: Mapped[str] = mapped_column(sa.String(8))
    path: Mapped[str] = mapped_column(sa.String(512))
    status_code: Mapped[int] = mapped_column(sa.Integer)
    request_id: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    target_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    # An attempt from outside: no valid key (kept in the operator's log), or a call on an org
    # the caller may not act in (kept in the caller's own log, never the target's).
    outsider: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())


class SshKeyRow(Base):
    """A tenant's SSH public key: its org's, added by ``created_by``; installed on the nodes
    of the instances and clusters that name it. One name and one key (fingerprint) per org."""

    __tablename__ = "ssh_keys"
    __table_args__ = (
        sa.UniqueConstraint("org_id", "name", name="uq_ssh_keys_org_id_name"),
        sa.UniqueConstraint("org_id", "fingerprint", name="uq_ssh_keys_org_id_fingerprint"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("orgs.id"), index=True)
    created_by: Mapped[str] = mapped_column(ID, sa.ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(64))
    public_key: Mapped[str] = mapped_column(sa.Text)  # the normalized line, at most 16 KiB
    fingerprint: Mapped[str] = mapped_column(sa.String(64))  # SHA256:<43 base64 characters>
    key_type: Mapped[str] = mapped_column(sa.String(32))
    bits: Mapped[int] = mapped_column(sa.Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
