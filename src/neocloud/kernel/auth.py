"""Who is calling: the authenticated principal every service authorises against.

It lives in the kernel because every context checks it and none should import another context
to do so. Roles are ordered: an owner may do what an admin may, and so on down to viewer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from neocloud.kernel.errors import NotFound, PermissionDenied


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def at_least(self, other: Role) -> bool:
        return self.rank >= other.rank


_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


@dataclass(frozen=True, slots=True)
class Principal:
    """An API key resolved to its user, org and role.

    ``is_operator`` is true when the key's org is the operator org: the operator's staff. An
    operator admin is an operator-org member with role admin or owner. ``expires_at``: when the
    key stops working (UTC), if it expires; a cache of principals must not serve it past then.
    """

    key_id: str
    user_id: str
    org_id: str
    role: Role
    is_operator: bool
    expires_at: datetime | None = None

    @property
    def is_operator_admin(self) -> bool:
        return self.is_operator and self.role.at_least(Role.ADMIN)

    def require_operator(self, *, write: bool = False) -> None:
        """Operator staff may read; operator admins may also change things."""
        if not self.is_operator:
            raise PermissionDenied("only the operator may do this", code="operator_only")
        if write and not self.is_operator_admin:
            raise PermissionDenied(
                "only an operator admin may change this", code="operator_admin_only"
            )

    def require_org_role(self, org_id: str, role: Role) -> None:
        """The caller must hold at least ``role`` in ``org_id`` (operator admins always may).

        Another org is 404 ``org_not_found`` to a tenant, as every read of another org's
        things answers: a tenant cannot tell another org's id from one that does not exist.
        Operator staff, who see every org, get 403 ``operator_admin_only``."""
        if self.is_operator_admin:
            return
        if self.org_id != org_id:
            if self.is_operator:
                raise PermissionDenied(
                    "only an operator admin may do this in another organization",
                    code="operator_admin_only",
                )
            raise NotFound(f"no organization {org_id}", code="org_not_found", param="org_id")
        if not self.role.at_least(role):
            raise PermissionDenied(
                f"this needs role {role.value} or higher; the key's role is {self.role.value}",
                code="insufficient_role",
            )
