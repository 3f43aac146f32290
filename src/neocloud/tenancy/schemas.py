"""Wire shapes of the tenancy API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from neocloud.kernel.auth import Role
from neocloud.tenancy import domain
from neocloud.web.schemas import RequestModel, ResponseModel, Time

Name = Annotated[str, Field(min_length=1, max_length=200)]
Email = Annotated[str, Field(min_length=3, max_length=254, pattern=domain.EMAIL_PATTERN)]
Slug = Annotated[str, Field(min_length=1, max_length=63, pattern=domain.SLUG_PATTERN)]
Id = Annotated[str, Field(min_length=1, max_length=40)]
Gpus = Annotated[int, Field(ge=0, le=domain.MAX_QUOTA_GPUS)]


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
    description: Annotated[str, Field(max_length=1000)] = ""


class UserCreate(RequestModel):
    email: Email
    name: Annotated[str, Field(max_length=200)] = ""
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
    expires_at: datetime | None = None


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
