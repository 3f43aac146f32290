"""Wire shapes of the tenancy API."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from neocloud.kernel.auth import Role
from neocloud.tenancy import domain
from neocloud.web.fields import (
    SSH_KEY_MAX,
    Clean,
    CleanText,
    Email,
    Id,
    Name,
    ShortText,
    UtcTime,
)
from neocloud.web.schemas import RequestModel, ResponseModel, Time

Slug = Annotated[str, Field(min_length=1, max_length=63, pattern=domain.SLUG_PATTERN)]
Gpus = Annotated[int, Field(strict=True, ge=0, le=domain.MAX_QUOTA_GPUS)]


# ----------------------------------------------------------------------------------- requests


class OrgCreate(RequestModel):
    name: Name
    slug: Slug | None = None
    owner_email: Email | None = Field(None, description="Made (or linked as) the org's owner")
    owner_name: Name | None = None


class OrgUpdate(RequestModel):
    name: Name | None = None


class ProjectCreate(RequestModel):
    name: Name
    description: CleanText = Field("", max_length=1000)


class UserCreate(RequestModel):
    email: Email
    name: ShortText = ""
    role: Role = Role.MEMBER


class MemberUpdate(RequestModel):
    role: Role


class KeyCreate(RequestModel):
    name: Name
    org_id: Id | None = Field(None, description="Default: the caller's org")
    user_id: Id | None = Field(
        None,
        description="Default: the caller; in an org the caller is not a member of, its first "
        "owner (admins may name another)",
    )
    role: Role | None = Field(None, description="Cap below the holder's membership role")
    expires_at: UtcTime | None = None


class QuotaSet(RequestModel):
    limit_gpus: Gpus


# ---------------------------------------------------------------------------------- responses


class OrgOut(ResponseModel):
    id: str
    object: Literal["organization"] = "organization"
    name: str
    slug: str
    is_operator: bool
    created_at: Time


class ProjectOut(ResponseModel):
    id: str
    object: Literal["project"] = "project"
    org_id: str
    name: str
    description: str
    created_at: Time


class UserOut(ResponseModel):
    id: str
    object: Literal["user"] = "user"
    email: str
    name: str
    created_at: Time
    org_id: str | None = None
    role: Role | None = None


class KeyOut(ResponseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    prefix: str
    org_id: str
    user_id: str
    role: Role | None
    created_at: Time
    expires_at: Time | None
    revoked_at: Time | None
    last_used_at: Time | None


class KeyCreated(KeyOut):
    secret: str | None = Field(
        description="The key itself: shown in this response only. Never stored, so an "
        "idempotent replay (header `Idempotent-Replayed: true`) answers it as null and says so "
        "in `Redacted-Fields: secret`; if the first response was lost, revoke that key and "
        "create another"
    )


class PrincipalOut(ResponseModel):
    object: Literal["principal"] = "principal"
    key_id: str
    user_id: str
    org_id: str
    role: Role
    is_operator: bool
    user: UserOut
    org: OrgOut


class QuotaOut(ResponseModel):
    object: Literal["quota"] = "quota"
    org_id: str
    gpu_model: str
    limit_gpus: int
    source: Literal["default", "override"]
    default_gpus: int | None
    usage: int = Field(description="GPUs in use now, counted against the limit")


class QuotaDefaultOut(ResponseModel):
    object: Literal["quota_default"] = "quota_default"
    gpu_model: str
    limit_gpus: int
    updated_at: Time


class AuditEventOut(ResponseModel):
    id: str
    object: Literal["audit_event"] = "audit_event"
    at: Time
    actor_key_id: str | None
    actor_user_id: str | None
    org_id: str | None
    method: str
    path: str
    status_code: int
    request_id: str | None
    target_id: str | None
    outsider: bool = Field(
        description="An attempt from outside: no valid key (in the operator's log) or a call on "
        "an org the caller may not act in (in the caller's own org's log, never the target's)"
    )


# ----------------------------------------------------------------------------------- ssh keys


class SshKeyCreate(RequestModel):
    name: Clean = Field(min_length=1, max_length=64, description="Unique in the organization")
    # Newlines pass the schema so that a pasted private key (several lines) gets its own precise
    # refusal from the service (and is never echoed), not a generic pattern error.
    public_key: CleanText = Field(
        min_length=1,
        max_length=SSH_KEY_MAX,
        description="One OpenSSH public key line, 'TYPE BASE64 [comment]' (the '.pub' file): "
        "ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa of 2048 bits or more",
    )


class SshKeyOut(ResponseModel):
    id: str
    object: Literal["ssh_key"] = "ssh_key"
    org_id: str
    name: str
    fingerprint: str = Field(description="SHA256:… as 'ssh-keygen -l' prints it")
    key_type: str
    bits: int
    public_key: str = Field(description="The normalized line installed on nodes")
    created_by: str = Field(description="The user who added the key (its owner)")
    created_at: Time


class SshKeyDeleted(ResponseModel):
    id: str
    object: Literal["ssh_key"] = "ssh_key"
    deleted: bool = True
    fingerprint: str
