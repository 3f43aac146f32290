"""Tenancy use cases: orgs, projects, users, API keys, authentication, quotas.

Each function is keyword-only, runs one transaction and raises the kernel's errors. ``actor`` is
the authenticated ``Principal`` that the function authorises against. Reads of another org's
objects answer not-found (its existence is not the caller's business); writes check roles.
Quotas live in ``neocloud.tenancy.quotas`` (``effective_quota`` is re-exported here), audit
events in ``neocloud.tenancy.audit``. Every write that changes what a key may do (revoking it,
removing its holder from the org, changing their role) bumps the credentials version
(``neocloud.tenancy.credentials``; ``credentials_version`` is re-exported here), so that caches
of principals drop theirs at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from neocloud.db.engine import Database
from neocloud.db.pagination import Page, paginate
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import Clock, ensure_utc
from neocloud.kernel.errors import (
    AuthenticationFailed,
    Conflict,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from neocloud.kernel.ids import new_id
from neocloud.tenancy import credentials, domain
from neocloud.tenancy.access import can_read, membership_row, org_row, require_read
from neocloud.tenancy.credentials import credentials_version as credentials_version  # re-exported
from neocloud.tenancy.quotas import effective_quota as effective_quota  # re-exported
from neocloud.tenancy.tables import (
    ApiKeyRow,
    MembershipRow,
    OrgRow,
    ProjectRow,
    UserRow,
)

if TYPE_CHECKING:
    from neocloud.web.deps import AppContext


# ---------------------------------------------------------------- authentication and bootstrap


def authenticator(ctx: AppContext, token: str) -> Principal:
    """The app's authenticate function: resolve a bearer token to a ``Principal``."""
    return authenticate_key(
        db=ctx.db, clock=ctx.clock, token=token, touch_interval_s=ctx.settings.key_touch_interval_s
    )


def authenticate_key(
    *, db: Database, clock: Clock, token: str, touch_interval_s: float = 60.0
) -> Principal:
    """Resolve ``token`` to its key's principal; 401 ``invalid_api_key`` for anything else.

    The role is the user's membership role now, capped by the key's role. ``last_used_at`` is
    written at most once per ``touch_interval_s`` seconds per key.
    """
    domain.check_key_format(token)
    now = clock.now()
    invalid = AuthenticationFailed("the API key is not valid", code="invalid_api_key")
    # effect=False: touching last_used_at is bookkeeping, not the effect of the request that
    # authenticates (an Idempotency-Key's record of its effect must not fire on it).
    with db.transaction(effect=False) as s:
        found = s.execute(
            sa.select(ApiKeyRow, MembershipRow.role, OrgRow.is_operator)
            .join(
                MembershipRow,
                sa.and_(
                    MembershipRow.org_id == ApiKeyRow.org_id,
                    MembershipRow.user_id == ApiKeyRow.user_id,
                ),
            )
            .join(OrgRow, OrgRow.id == ApiKeyRow.org_id)
            .where(ApiKeyRow.secret_hash == domain.hash_key(token))
        ).first()
        if found is None:
            raise invalid
        key, member_role, is_operator = found
        if key.revoked_at is not None:
            raise AuthenticationFailed("the API key has been revoked", code="invalid_api_key")
        if key.expires_at is not None and key.expires_at <= now:
            raise AuthenticationFailed("the API key has expired", code="invalid_api_key")
        due = key.last_used_at is None or now - key.last_used_at >= timedelta(
            seconds=touch_interval_s
        )
        if due:
            s.execute(sa.update(ApiKeyRow).where(ApiKeyRow.id == key.id).values(last_used_at=now))
        role = domain.effective_role(Role(member_role), Role(key.role) if key.role else None)
        return Principal(key.id, key.user_id, key.org_id, role, bool(is_operator), key.expires_at)


def bootstrap_operator(*, db: Database, clock: Clock) -> str | None:
    """Create the operator org, its admin user and a key; return the key's secret.

    Idempotent: returns ``None`` when the operator org exists already.
    """
    now = clock.now()
    made = domain.generate_key()
    try:
        with db.transaction() as s:
            if s.scalar(sa.select(OrgRow.id).where(OrgRow.is_operator.is_(True))) is not None:
                return None
            org = _new_org(now, "Operator", domain.OPERATOR_ORG_SLUG, is_operator=True)
            s.add(org)
            s.flush()
            user = _find_or_create_user(s, now, domain.OPERATOR_ADMIN_EMAIL, "Operator admin")
            s.add(_new_membership(now, org.id, user.id, Role.OWNER))
            s.add(_new_key(now, made, org.id, user.id, "bootstrap admin", None, None))
    except Conflict:  # another process bootstrapped at the same moment
        return None
    return made.secret


@dataclass(frozen=True)
class Me:
    principal: Principal
    user: UserRow
    org: OrgRow


def get_me(*, db: Database, actor: Principal) -> Me:
    with db.transaction() as s:
        user = s.get(UserRow, actor.user_id)
        org = s.get(OrgRow, actor.org_id)
    if user is None or org is None:
        raise AuthenticationFailed("the API key is not valid", code="invalid_api_key")
    return Me(actor, user, org)


# ---------------------------------------------------------------------------------------- orgs


def create_org(
    *,
    db: Database,
    clock: Clock,
    actor: Principal,
    name: str,
    slug: str | None = None,
    owner_email: str | None = None,
    owner_name: str | None = None,
) -> OrgRow:
    """Create an org (operator admins only); with ``owner_email``, that user becomes its owner."""
    actor.require_operator(write=True)
    slug = domain.check_slug(slug) if slug else domain.slugify(name)
    email = domain.normalize_email(owner_email) if owner_email else None
    now = clock.now()
    org = _new_org(now, name, slug, is_operator=False)
    try:
        with db.transaction() as s:
            s.add(org)
            s.flush()
            if email is not None:
                user = _find_or_create_user(s, now, email, owner_name or "")
                s.add(_new_membership(now, org.id, user.id, Role.OWNER))
    except Conflict as exc:
        raise Conflict(
            f"an organization with slug {slug!r} exists already", code="slug_taken", param="slug"
        ) from exc
    return org


def list_orgs(*, db: Database, actor: Principal, limit: int, after: str | None) -> Page[OrgRow]:
    """Operator staff see every org; anyone else sees their own."""
    stmt = sa.select(OrgRow)
    if not actor.is_operator:
        stmt = stmt.where(OrgRow.id == actor.org_id)
    with db.transaction() as s:
        return paginate(s, stmt, OrgRow.id, limit=limit, after=after)


def get_org(*, db: Database, actor: Principal, org_id: str) -> OrgRow:
    require_read(actor, org_id)
    with db.transaction() as s:
        return org_row(s, org_id)


def update_org(
    *, db: Database, clock: Clock, actor: Principal, org_id: str, name: str | None
) -> OrgRow:
    require_read(actor, org_id)
    actor.require_org_role(org_id, Role.ADMIN)
    with db.transaction() as s:
        org = org_row(s, org_id)
        if name is not None:
            org.name = name
        org.updated_at = clock.now()
    return org


# ------------------------------------------------------------------------------------ projects


def create_project(
    *, db: Database, clock: Clock, actor: Principal, org_id: str, name: str, description: str = ""
) -> ProjectRow:
    require_read(actor, org_id)
    actor.require_org_role(org_id, Role.ADMIN)
    row = ProjectRow(
        id=new_id("prj"),
        org_id=org_id,
        name=name,
        description=description,
        created_at=clock.now(),
    )
    try:
        with db.transaction() as s:
            org_row(s, org_id)
            s.add(row)
    except Conflict as exc:
        raise Conflict(
            f"the organization has a project named {name!r} already",
            code="project_name_taken",
            param="name",
        ) from exc
    return row


def list_projects(
    *, db: Database, actor: Principal, org_id: str, limit: int, after: str | None
) -> Page[ProjectRow]:
    require_read(actor, org_id)
    with db.transaction() as s:
        org_row(s, org_id)
        stmt = sa.select(ProjectRow).where(ProjectRow.org_id == org_id)
        return paginate(s, stmt, ProjectRow.id, limit=limit, after=after)


def get_project(*, db: Database, actor: Principal, project_id: str) -> ProjectRow:
    with db.transaction() as s:
        row = s.get(ProjectRow, project_id)
    if row is None or not can_read(actor, row.org_id):
        raise NotFound(f"no project {project_id}", code="project_not_found", param="project_id")
    return row


# --------------------------------------------------------------------------------------- users


@dataclass(frozen=True)
class Member:
    """A user as seen from one org: the user and their role there."""

    user: UserRow
    org_id: str
    role: Role


def add_user(
    *,
    db: Database,
    clock: Clock,
    actor: Principal,
    org_id: str,
    email: str,
    name: str = "",
    role: Role = Role.MEMBER,
) -> Member:
    """Add a user (created if the email is new) to ``org_id`` with ``role`` (org admins)."""
    require_read(actor, org_id)
    actor.require_org_role(org_id, Role.ADMIN)
    domain.check_can_grant(actor.role, role, operator_admin=actor.is_operator_admin)
    email = domain.normalize_email(email)
    now = clock.now()
    try:
        with db.transaction() as s:
            org_row(s, org_id)
            user = _find_or_create_user(s, now, email, name)
            s.add(_new_membership(now, org_id, user.id, role))
    except Conflict as exc:
        raise Conflict(
            f"{email} is a member of this organization already",
            code="already_member",
            param="email",
        ) from exc
    return Member(user, org_id, role)


def list_members(
    *, db: Database, actor: Principal, org_id: str, limit: int, after: str | None
) -> Page[Member]:
    require_read(actor, org_id)
    with db.transaction() as s:
        org_row(s, org_id)
        stmt = (
            sa.select(UserRow)
            .join(MembershipRow, MembershipRow.user_id == UserRow.id)
            .where(MembershipRow.org_id == org_id)
        )
        page = paginate(s, stmt, UserRow.id, limit=limit, after=after)
        roles = dict(
            s.execute(
                sa.select(MembershipRow.user_id, MembershipRow.role).where(
                    MembershipRow.org_id == org_id,
                    MembershipRow.user_id.in_([u.id for u in page.items]),
                )
            ).all()
        )
    members = [Member(u, org_id, Role(roles[u.id])) for u in page.items]
    return Page(members, page.has_more, page.next_cursor)


def set_member_role(
    *, db: Database, clock: Clock, actor: Principal, org_id: str, user_id: str, role: Role
) -> Member:
    """Change a member's role; the last owner of an org cannot stop being one (409)."""
    require_read(actor, org_id)
    actor.require_org_role(org_id, Role.ADMIN)
    operator_admin = actor.is_operator_admin
    domain.check_can_grant(actor.role, role, operator_admin=operator_admin)
    with db.transaction() as s:
        # Lock the org row so two demotions of the last two owners cannot both pass.
        s.execute(sa.select(OrgRow.id).where(OrgRow.id == org_id).with_for_update()).first()
        org_row(s, org_id)
        membership = membership_row(s, org_id, user_id)
        current = Role(membership.role)
        if current is Role.OWNER and not operator_admin and actor.role is not Role.OWNER:
            raise PermissionDenied(
                "only an owner may change an owner's role",
                code="insufficient_role",
                param="role",
            )
        if current is Role.OWNER and role is not Role.OWNER:
            _check_not_last_owner(s, org_id, param="role")
        user = s.get(UserRow, user_id)
        if role is not current:
            membership.role = role.value
            credentials.bump(s)
    assert user is not None
    return Member(user, org_id, role)


def remove_member(*, db: Database, actor: Principal, org_id: str, user_id: str) -> None:
    """Take a user out of an org (their keys for it stop working at once); not the last owner."""
    require_read(actor, org_id)
    actor.require_org_role(org_id, Role.ADMIN)
    with db.transaction() as s:
        s.execute(sa.select(OrgRow.id).where(OrgRow.id == org_id).with_for_update()).first()
        org_row(s, org_id)
        membership = membership_row(s, org_id, user_id)
        if Role(membership.role) is Role.OWNER:
            if not actor.is_operator_admin and actor.role is not Role.OWNER:
                raise PermissionDenied(
                    "only an owner may remove an owner", code="insufficient_role"
                )
            _check_not_last_owner(s, org_id, param="user_id")
        s.delete(membership)
        credentials.bump(s)


def _check_not_last_owner(s: Session, org_id: str, *, param: str) -> None:
    owners = s.scalar(
        sa.select(sa.func.count())
        .select_from(MembershipRow)
        .where(MembershipRow.org_id == org_id, MembershipRow.role == Role.OWNER.value)
    )
    if owners is not None and owners <= 1:
        raise Conflict(
            "this user is the organization's last owner; make another owner first",
            code="last_owner",
            param=param,
        )


# ---------------------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKeyRow
    secret: str  # shown once, never stored


def create_key(
    *,
    db: Database,
    clock: Clock,
    actor: Principal,
    name: str,
    org_id: str | None = None,
    user_id: str | None = None,
    role: Role | None = None,
    expires_at: datetime | None = None,
) -> CreatedKey:
    """Make an API key for the caller (or, for an org admin, another member of the org).

    Without ``user_id`` the key is the caller's; in an org the caller is not a member of (an
    operator admin onboarding a tenant) it is the key of that org's first owner.

    Viewers make no keys; no one makes a key for a member who ranks above them, nor a key
    stronger than their own: without ``role`` a key made by a capped key inherits that cap. An
    operator admin acting in another org stands above every role there.
    """
    org_id = org_id or actor.org_id
    default_holder = user_id is None
    user_id = user_id or actor.user_id
    now = clock.now()
    if expires_at is not None:
        expires_at = ensure_utc(expires_at)  # a time without an offset is UTC, as everywhere
    if expires_at is not None and expires_at <= now:
        raise ValidationFailed(
            "expires_at must be in the future", code="expires_at_in_past", param="expires_at"
        )
    if org_id != actor.org_id or user_id != actor.user_id:
        require_read(actor, org_id)
        actor.require_org_role(org_id, Role.ADMIN)
    above_all = _above_every_tenant_role(actor, org_id)
    if not above_all:
        domain.check_may_manage_keys(actor.role)
    made = domain.generate_key()
    with db.transaction() as s:
        org_row(s, org_id)
        if default_holder and org_id != actor.org_id:
            user_id = _default_key_holder(s, org_id, actor.user_id)
        holder_role = Role(membership_row(s, org_id, user_id, param="user_id").role)
        domain.check_key_role(role, holder_role)
        if not above_all:
            if user_id != actor.user_id:
                domain.check_acts_for(actor.role, holder_role)
            # Nobody mints a key stronger than the one they hold.
            strongest = role or holder_role
            if strongest.rank > actor.role.rank:
                if role is not None:
                    raise PermissionDenied(
                        f"your key's role is {actor.role.value}; it cannot make a {role.value} key",
                        code="insufficient_role",
                        param="role",
                    )
                role = actor.role
        row = _new_key(now, made, org_id, user_id, name, role, expires_at)
        s.add(row)
    return CreatedKey(row, made.secret)


def list_keys(
    *, db: Database, actor: Principal, org_id: str | None, limit: int, after: str | None
) -> Page[ApiKeyRow]:
    """The caller's own keys; with ``org_id``, every key of that org (its admins only)."""
    stmt = sa.select(ApiKeyRow)
    if org_id is None:
        stmt = stmt.where(ApiKeyRow.user_id == actor.user_id, ApiKeyRow.org_id == actor.org_id)
    else:
        require_read(actor, org_id)
        if not (actor.is_operator and org_id != actor.org_id):
            actor.require_org_role(org_id, Role.ADMIN)
        stmt = stmt.where(ApiKeyRow.org_id == org_id)
    with db.transaction() as s:
        return paginate(s, stmt, ApiKeyRow.id, limit=limit, after=after)


def get_key(*, db: Database, actor: Principal, key_id: str) -> ApiKeyRow:
    with db.transaction() as s:
        return _visible_key(s, actor, key_id)


def revoke_key(*, db: Database, clock: Clock, actor: Principal, key_id: str) -> ApiKeyRow:
    """Revoke a key; revoking twice is harmless.

    A key may always revoke itself. Any other key: not by a viewer; the caller's own other keys
    up to the caller's (effective) role, so a capped key cannot revoke a stronger one; another
    member's keys by an org admin, unless that member ranks above the admin. An operator admin
    acting in another org stands above every role there.
    """
    with db.transaction() as s:
        row = _visible_key(s, actor, key_id)
        if row.id != actor.key_id:
            _check_may_revoke(s, actor, row)
        if row.revoked_at is None:
            row.revoked_at = clock.now()
            credentials.bump(s)
    return row


def _check_may_revoke(s: Session, actor: Principal, row: ApiKeyRow) -> None:
    own = row.user_id == actor.user_id and row.org_id == actor.org_id
    if not own:
        actor.require_org_role(row.org_id, Role.ADMIN)
    if _above_every_tenant_role(actor, row.org_id):
        return
    domain.check_may_manage_keys(actor.role)
    member_role = s.scalar(
        sa.select(MembershipRow.role).where(
            MembershipRow.org_id == row.org_id, MembershipRow.user_id == row.user_id
        )
    )
    if member_role is None:  # its holder left the org: the key authenticates no one
        return
    holder_role = Role(member_role)
    if own:  # the same member: what matters is what that key can do
        holder_role = domain.effective_role(holder_role, Role(row.role) if row.role else None)
    domain.check_acts_for(actor.role, holder_role, param="key_id")


# ------------------------------------------------------------------------------------- helpers


def _above_every_tenant_role(actor: Principal, org_id: str) -> bool:
    """An operator admin acting in a tenant's org ranks above every role there (in the
    operator's own org, its role there counts as anyone's)."""
    return actor.is_operator_admin and org_id != actor.org_id


def _visible_key(s: Session, actor: Principal, key_id: str) -> ApiKeyRow:
    row = s.get(ApiKeyRow, key_id)
    own = row is not None and row.user_id == actor.user_id and row.org_id == actor.org_id
    if row is None or not (
        own
        or (actor.is_operator and row.org_id != actor.org_id)
        or actor.is_operator_admin
        or (row.org_id == actor.org_id and actor.role.at_least(Role.ADMIN))
    ):
        raise NotFound(f"no API key {key_id}", code="key_not_found", param="key_id")
    return row


def _default_key_holder(s: Session, org_id: str, caller_user_id: str) -> str:
    """The caller if a member of the org, else its first owner (the caller when it has none,
    so that the membership check says who is missing)."""
    members = sa.select(MembershipRow.user_id).where(MembershipRow.org_id == org_id)
    if s.scalar(members.where(MembershipRow.user_id == caller_user_id)) is not None:
        return caller_user_id
    owner = s.scalar(
        members.where(MembershipRow.role == Role.OWNER.value)
        .order_by(MembershipRow.created_at, MembershipRow.id)
        .limit(1)
    )
    return owner or caller_user_id


def _find_or_create_user(s: Session, now: datetime, email: str, name: str) -> UserRow:
    """The user with ``email``, created if new; a concurrent creation is picked up, not a 409."""
    existing = s.scalar(sa.select(UserRow).where(UserRow.email == email))
    if existing is not None:
        return existing
    user = UserRow(id=new_id("usr"), email=email, name=name, created_at=now)
    try:
        with s.begin_nested():
            s.add(user)
    except IntegrityError:
        found = s.scalar(sa.select(UserRow).where(UserRow.email == email))
        assert found is not None
        return found
    return user


def _new_org(now: datetime, name: str, slug: str, *, is_operator: bool) -> OrgRow:
    return OrgRow(
        id=new_id("org"),
        name=name,
        slug=slug,
        is_operator=is_operator,
        operator_marker=True if is_operator else None,
        created_at=now,
        updated_at=now,
    )


def _new_membership(now: datetime, org_id: str, user_id: str, role: Role) -> MembershipRow:
    return MembershipRow(
        id=new_id("mem"), org_id=org_id, user_id=user_id, role=role.value, created_at=now
    )


def _new_key(
    now: datetime,
    made: domain.NewKey,
    org_id: str,
    user_id: str,
    name: str,
    role: Role | None,
    expires_at: datetime | None,
) -> ApiKeyRow:
    return ApiKeyRow(
        id=new_id("key"),
        org_id=org_id,
        user_id=user_id,
        name=name,
        prefix=made.prefix,
        secret_hash=made.hash,
        role=role.value if role else None,
        created_at=now,
        expires_at=expires_at,
        revoked_at=None,
        last_used_at=None,
    )
