"""Tenancy routes: who am I, orgs, projects, users, API keys, quotas and the audit log.

Projects are nested under their org: ``POST/GET /orgs/{org_id}/projects``; a project is read
alone at ``GET /projects/{project_id}``.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request

from neocloud.kernel.clock import ensure_utc
from neocloud.tenancy import audit, quotas, service
from neocloud.tenancy import domain as rules
from neocloud.tenancy.schemas import (
    AuditEventOut,
    KeyCreate,
    KeyCreated,
    KeyOut,
    MemberUpdate,
    OrgCreate,
    OrgOut,
    OrgUpdate,
    PrincipalOut,
    ProjectCreate,
    ProjectOut,
    QuotaDefaultOut,
    QuotaOut,
    QuotaSet,
    UserCreate,
    UserOut,
)
from neocloud.tenancy.tables import OrgRow
from neocloud.web.deps import Caller, Ctx, Paging
from neocloud.web.fields import UtcTime
from neocloud.web.schemas import ERROR_RESPONSES, ListOut

router = APIRouter(responses=ERROR_RESPONSES)

OrgId = Annotated[str, Path(max_length=40)]
AnyId = Annotated[str, Path(max_length=40)]
GpuModel = Annotated[str, Path(max_length=64, pattern=rules.GPU_MODEL_PATTERN)]
TAG_ORGS: list[str | Enum] = ["organizations"]
TAG_PROJECTS: list[str | Enum] = ["projects"]
TAG_USERS: list[str | Enum] = ["users"]
TAG_KEYS: list[str | Enum] = ["api keys"]
TAG_QUOTAS: list[str | Enum] = ["quotas"]
TAG_AUDIT: list[str | Enum] = ["audit"]


def _org(row: OrgRow) -> OrgOut:
    return OrgOut.model_validate(row, from_attributes=True)


def _member(m: service.Member) -> UserOut:
    return UserOut(
        id=m.user.id,
        email=m.user.email,
        name=m.user.name,
        created_at=m.user.created_at,
        org_id=m.org_id,
        role=m.role,
    )


def _quota(q: quotas.EffectiveQuota) -> QuotaOut:
    return QuotaOut(
        org_id=q.org_id,
        gpu_model=q.gpu_model,
        limit_gpus=q.limit_gpus,
        source=q.source,
        default_gpus=q.default_gpus,
        usage=q.usage_gpus,
    )


@router.get("/me", response_model=PrincipalOut, tags=TAG_ORGS)
def me(ctx: Ctx, caller: Caller) -> PrincipalOut:
    """Who this key is: its user, org and effective role."""
    found = service.get_me(db=ctx.db, actor=caller)
    return PrincipalOut(
        key_id=caller.key_id,
        user_id=caller.user_id,
        org_id=caller.org_id,
        role=caller.role,
        is_operator=caller.is_operator,
        user=_member(service.Member(found.user, found.org.id, caller.role)),
        org=_org(found.org),
    )


# ---------------------------------------------------------------------------------------- orgs


@router.post("/orgs", response_model=OrgOut, status_code=201, tags=TAG_ORGS)
def create_org(ctx: Ctx, caller: Caller, body: OrgCreate) -> OrgOut:
    """Create an organization (operator admins). ``owner_email`` makes that user its owner."""
    row = service.create_org(
        db=ctx.db,
        clock=ctx.clock,
        actor=caller,
        name=body.name,
        slug=body.slug,
        owner_email=body.owner_email,
        owner_name=body.owner_name,
    )
    return _org(row)


@router.get("/orgs", response_model=ListOut[OrgOut], tags=TAG_ORGS)
def list_orgs(ctx: Ctx, caller: Caller, paging: Paging) -> ListOut[OrgOut]:
    page = service.list_orgs(db=ctx.db, actor=caller, limit=paging.limit, after=paging.after)
    return ListOut(
        data=[_org(r) for r in page.items], has_more=page.has_more, next_cursor=page.next_cursor
    )


@router.get("/orgs/{org_id}", response_model=OrgOut, tags=TAG_ORGS)
def get_org(ctx: Ctx, caller: Caller, org_id: OrgId) -> OrgOut:
    return _org(service.get_org(db=ctx.db, actor=caller, org_id=org_id))


@router.patch("/orgs/{org_id}", response_model=OrgOut, tags=TAG_ORGS)
def update_org(ctx: Ctx, caller: Caller, org_id: OrgId, body: OrgUpdate) -> OrgOut:
    row = service.update_org(
        db=ctx.db, clock=ctx.clock, actor=caller, org_id=org_id, name=body.name
    )
    return _org(row)


# ------------------------------------------------------------------------------------ projects


@router.post(
    "/orgs/{org_id}/projects", response_model=ProjectOut, status_code=201, tags=TAG_PROJECTS
)
def create_project(ctx: Ctx, caller: Caller, org_id: OrgId, body: ProjectCreate) -> ProjectOut:
    row = service.create_project(
        db=ctx.db,
        clock=ctx.clock,
        actor=caller,
        org_id=org_id,
        name=body.name,
        description=body.description,
    )
    return ProjectOut.model_validate(row, from_attributes=True)


@router.get("/orgs/{org_id}/projects", response_model=ListOut[ProjectOut], tags=TAG_PROJECTS)
def list_projects(ctx: Ctx, caller: Caller, org_id: OrgId, paging: Paging) -> ListOut[ProjectOut]:
    page = service.list_projects(
        db=ctx.db, actor=caller, org_id=org_id, limit=paging.limit, after=paging.after
    )
    return ListOut(
        data=[ProjectOut.model_validate(r, from_attributes=True) for r in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get("/projects/{project_id}", response_model=ProjectOut, tags=TAG_PROJECTS)
def get_project(ctx: Ctx, caller: Caller, project_id: AnyId) -> ProjectOut:
    row = service.get_project(db=ctx.db, actor=caller, project_id=project_id)
    return ProjectOut.model_validate(row, from_attributes=True)


# --------------------------------------------------------------------------------------- users


@router.post("/orgs/{org_id}/users", response_model=UserOut, status_code=201, tags=TAG_USERS)
def add_user(ctx: Ctx, caller: Caller, org_id: OrgId, body: UserCreate) -> UserOut:
    """Add a user to the org with a role (created if the email is new; org admins)."""
    member = service.add_user(
        db=ctx.db,
        clock=ctx.clock,
        actor=caller,
        org_id=org_id,
        email=body.email,
        name=body.name,
        role=body.role,
    )
    return _member(member)


@router.get("/orgs/{org_id}/users", response_model=ListOut[UserOut], tags=TAG_USERS)
def list_users(ctx: Ctx, caller: Caller, org_id: OrgId, paging: Paging) -> ListOut[UserOut]:
    page = service.list_members(
        db=ctx.db, actor=caller, org_id=org_id, limit=paging.limit, after=paging.after
    )
    return ListOut(
        data=[_member(m) for m in page.items], has_more=page.has_more, next_cursor=page.next_cursor
    )


@router.patch("/orgs/{org_id}/users/{user_id}", response_model=UserOut, tags=TAG_USERS)
def update_user(
    ctx: Ctx, caller: Caller, org_id: OrgId, user_id: AnyId, body: MemberUpdate
) -> UserOut:
    """Change a member's role; the org's last owner stays owner (409 ``last_owner``)."""
    member = service.set_member_role(
        db=ctx.db, clock=ctx.clock, actor=caller, org_id=org_id, user_id=user_id, role=body.role
    )
    return _member(member)


@router.delete("/orgs/{org_id}/users/{user_id}", status_code=204, tags=TAG_USERS)
def remove_user(ctx: Ctx, caller: Caller, org_id: OrgId, user_id: AnyId) -> None:
    """Take a user out of the org; their keys for it stop working at once (org admins)."""
    service.remove_member(db=ctx.db, actor=caller, org_id=org_id, user_id=user_id)


# ---------------------------------------------------------------------------------------- keys


@router.post("/keys", response_model=KeyCreated, status_code=201, tags=TAG_KEYS)
def create_key(ctx: Ctx, caller: Caller, body: KeyCreate) -> KeyCreated:
    """Create an API key. Its ``secret`` is in this response only; store it now."""
    made = service.create_key(
        db=ctx.db,
        clock=ctx.clock,
        actor=caller,
        name=body.name,
        org_id=body.org_id,
        user_id=body.user_id,
        role=body.role,
        expires_at=body.expires_at,
    )
    out = KeyOut.model_validate(made.key, from_attributes=True)
    return KeyCreated(**out.model_dump(), secret=made.secret)


@router.get("/keys", response_model=ListOut[KeyOut], tags=TAG_KEYS)
def list_keys(
    ctx: Ctx,
    caller: Caller,
    paging: Paging,
    org_id: Annotated[str | None, Query(max_length=40, description="Every key of the org")] = None,
) -> ListOut[KeyOut]:
    page = service.list_keys(
        db=ctx.db, actor=caller, org_id=org_id, limit=paging.limit, after=paging.after
    )
    return ListOut(
        data=[KeyOut.model_validate(r, from_attributes=True) for r in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get("/keys/{key_id}", response_model=KeyOut, tags=TAG_KEYS)
def get_key(ctx: Ctx, caller: Caller, key_id: AnyId) -> KeyOut:
    row = service.get_key(db=ctx.db, actor=caller, key_id=key_id)
    return KeyOut.model_validate(row, from_attributes=True)


@router.post("/keys/{key_id}/revoke", response_model=KeyOut, tags=TAG_KEYS)
def revoke_key(ctx: Ctx, caller: Caller, key_id: AnyId) -> KeyOut:
    row = service.revoke_key(db=ctx.db, clock=ctx.clock, actor=caller, key_id=key_id)
    return KeyOut.model_validate(row, from_attributes=True)


# -------------------------------------------------------------------------------------- quotas


def _ports(request: Request) -> quotas.QuotaPorts:
    """The quota ports wired at start-up (``api.platform.wire_ports``)."""
    ports: quotas.QuotaPorts | None = getattr(request.app.state, "quota_ports", None)
    return quotas.NO_PORTS if ports is None else ports


@router.get("/orgs/{org_id}/quotas", response_model=ListOut[QuotaOut], tags=TAG_QUOTAS)
def list_quotas(request: Request, ctx: Ctx, caller: Caller, org_id: OrgId) -> ListOut[QuotaOut]:
    """The org's effective quota per GPU model (its override, else the registered default) and
    the GPUs it uses."""
    found = quotas.list_quotas(db=ctx.db, actor=caller, org_id=org_id, ports=_ports(request))
    return ListOut(data=[_quota(q) for q in found], has_more=False)


@router.put("/orgs/{org_id}/quotas/{gpu_model}", response_model=QuotaOut, tags=TAG_QUOTAS)
def set_quota(
    request: Request, ctx: Ctx, caller: Caller, org_id: OrgId, gpu_model: GpuModel, body: QuotaSet
) -> QuotaOut:
    """Override the org's quota for one GPU model (operator admins)."""
    quota = quotas.set_quota(
        db=ctx.db,
        clock=ctx.clock,
        actor=caller,
        org_id=org_id,
        gpu_model=gpu_model,
        limit_gpus=body.limit_gpus,
        ports=_ports(request),
    )
    return _quota(quota)


@router.delete("/orgs/{org_id}/quotas/{gpu_model}", status_code=204, tags=TAG_QUOTAS)
def delete_quota(
    request: Request, ctx: Ctx, caller: Caller, org_id: OrgId, gpu_model: GpuModel
) -> None:
    """Drop the org's override so the registered default applies again (operator admins)."""
    quotas.delete_quota(
        db=ctx.db, actor=caller, org_id=org_id, gpu_model=gpu_model, ports=_ports(request)
    )


@router.get("/quota-defaults", response_model=ListOut[QuotaDefaultOut], tags=TAG_QUOTAS)
def list_quota_defaults(ctx: Ctx, caller: Caller, paging: Paging) -> ListOut[QuotaDefaultOut]:
    page = quotas.list_quota_defaults(
        db=ctx.db, actor=caller, limit=paging.limit, after=paging.after
    )
    return ListOut(
        data=[QuotaDefaultOut.model_validate(r, from_attributes=True) for r in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.put("/quota-defaults/{gpu_model}", response_model=QuotaDefaultOut, tags=TAG_QUOTAS)
def set_quota_default(
    request: Request, ctx: Ctx, caller: Caller, gpu_model: GpuModel, body: QuotaSet
) -> QuotaDefaultOut:
    """Register the default quota of a GPU model for every org without an override."""
    row = quotas.set_quota_default(
        db=ctx.db,
        clock=ctx.clock,
        actor=caller,
        gpu_model=gpu_model,
        limit_gpus=body.limit_gpus,
        ports=_ports(request),
    )
    return QuotaDefaultOut.model_validate(row, from_attributes=True)


# --------------------------------------------------------------------------------------- audit


@router.get("/audit-events", response_model=ListOut[AuditEventOut], tags=TAG_AUDIT)
def list_audit_events(
    ctx: Ctx,
    caller: Caller,
    paging: Paging,
    org_id: Annotated[str | None, Query(max_length=40)] = None,
    actor: Annotated[str | None, Query(max_length=40, description="User or key id")] = None,
    method: Annotated[Literal["POST", "PUT", "PATCH", "DELETE"] | None, Query()] = None,
    since: Annotated[UtcTime | None, Query()] = None,
) -> ListOut[AuditEventOut]:
    """Mutating calls, newest first: operator staff see all, org admins their org's."""
    page = audit.list_events(
        db=ctx.db,
        actor=caller,
        limit=paging.limit,
        after=paging.after,
        org_id=org_id,
        actor_id=actor,
        method=method,
        since=ensure_utc(since) if since else None,
    )
    return ListOut(
        data=[AuditEventOut.model_validate(r, from_attributes=True) for r in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )
