"""Shared lookups and read rules of the tenancy services."""

from __future__ import annotations

from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from neocloud.kernel.auth import Principal
from neocloud.kernel.errors import NotFound
from neocloud.tenancy.tables import MembershipRow, OrgRow


def rowcount(result: sa.Result[Any]) -> int:
    return cast(CursorResult[Any], result).rowcount


def can_read(actor: Principal, org_id: str) -> bool:
    return actor.is_operator or actor.org_id == org_id


def require_read(actor: Principal, org_id: str) -> None:
    if not can_read(actor, org_id):
        raise NotFound(f"no organization {org_id}", code="org_not_found", param="org_id")


def org_row(s: Session, org_id: str) -> OrgRow:
    org = s.get(OrgRow, org_id)
    if org is None:
        raise NotFound(f"no organization {org_id}", code="org_not_found", param="org_id")
    return org


def membership_row(
    s: Session, org_id: str, user_id: str, *, param: str = "user_id"
) -> MembershipRow:
    row = s.scalar(
        sa.select(MembershipRow).where(
            MembershipRow.org_id == org_id, MembershipRow.user_id == user_id
        )
    )
    if row is None:
        raise NotFound(
            f"user {user_id} is not a member of organization {org_id}",
            code="user_not_found",
            param=param,
        )
    return row
