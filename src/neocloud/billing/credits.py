"""Credit grants: the operator grants an org credit, invoices use it (by priority, then
earliest expiry), and what is left of each grant is its amount less the credit lines of
finalized invoices (plus what credit notes gave back). Promotional credit is never paid out.

The order in which grants pay is pure (``billing.contracts.apply_credits``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.billing import ledger
from neocloud.billing.adjustments import period_name
from neocloud.billing.contract_service import require_org, require_positive
from neocloud.billing.contracts import (
    PAID_CREDIT,
    PROMOTIONAL_CREDIT,
    Charge,
    Grant,
    apply_credits,
    round_line,
)
from neocloud.billing.kinds import LineKind
from neocloud.billing.rating import Period
from neocloud.billing.tables import CreditGrantRow
from neocloud.db.engine import Database
from neocloud.db.pagination import Page, paginate
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import ValidationFailed
from neocloud.kernel.ids import new_id
from neocloud.kernel.money import Money


@dataclass(frozen=True, slots=True)
class GrantView:
    grant: CreditGrantRow
    balance: Decimal  # left after finalized invoices


def grant_credit(
    *,
    db: Database,
    clock: Clock,
    principal: Principal,
    org_id: str,
    amount: Decimal,
    priority: int = 0,
    expires_at: datetime | None = None,
    paid: bool = False,
    currency: str = "USD",
    note: str | None = None,
) -> CreditGrantRow:
    """Grant credit to an org (operator admins): 404 unknown org, 422 a non-positive amount,
    a negative priority or an expiry in the past."""
    principal.require_operator(write=True)
    require_positive(amount, "amount")
    if priority < 0:
        raise ValidationFailed(
            "priority is zero or more", code="invalid_priority", param="priority"
        )
    now = clock.now()
    if expires_at is not None and expires_at <= now:
        raise ValidationFailed(
            "a credit grant cannot expire in the past", code="invalid_dates", param="expires_at"
        )
    with db.transaction() as s:
        require_org(s, org_id)
        row = CreditGrantRow(
            id=new_id("cred", at=now),
            org_id=org_id,
            amount=amount,
            currency=currency,
            priority=priority,
            expires_at=expires_at,
            paid=paid,
            note=note,
            created_by=principal.key_id,
            created_at=now,
        )
        s.add(row)
        s.flush()
        s.expunge(row)
        return row


def list_credits(
    *, db: Database, principal: Principal, org_id: str, limit: int, after: str | None
) -> tuple[list[GrantView], Page[CreditGrantRow]]:
    """An org's grants with what is left of each (after finalized invoices)."""
    principal.require_org_role(org_id, Role.VIEWER)
    with db.transaction() as s:
        query = sa.select(CreditGrantRow).where(CreditGrantRow.org_id == org_id)
        page = paginate(s, query, CreditGrantRow.id, limit=limit, after=after)
        used = ledger.drawn(s, [g.id for g in page.items], LineKind.CREDIT, org_id)
        s.expunge_all()
    views = [GrantView(g, g.amount - used.get(g.id, Decimal(0))) for g in page.items]
    return views, page


def credit_charges(
    s: Session, org_id: str, period: Period, due: Decimal, currency: str
) -> list[Charge]:
    """The ``credit`` lines that pay ``due`` (what the month's invoice comes to before credit)
    from the org's grants in ``currency``, in the order ``apply_credits`` takes them; none when
    nothing is due."""
    if due <= 0:
        return []  # never pay out credit: a negative total stays a balance owed to the org
    rows = list(
        s.scalars(
            sa.select(CreditGrantRow).where(
                CreditGrantRow.org_id == org_id, CreditGrantRow.currency == currency
            )
        )
    )
    used = ledger.drawn(s, [g.id for g in rows], LineKind.CREDIT, org_id)
    grants = [
        Grant(
            g.id,
            Money(g.amount - used.get(g.id, Decimal(0)), currency),
            g.priority,
            g.expires_at,
            g.paid,
        )
        for g in rows
    ]
    # A grant pays a month's invoice if it is still live at the month's last instant.
    at = period.end - timedelta(microseconds=1)
    applied = apply_credits(Money(due, currency), grants, at)
    name = period_name(period)
    return [
        Charge(
            LineKind.CREDIT,
            name,
            PAID_CREDIT if _paid(rows, gid) else PROMOTIONAL_CREDIT,
            -round_line(m.amount),
            gid,
        )
        for gid, m in applied.applied
    ]


def _paid(rows: Sequence[CreditGrantRow], grant_id: str) -> bool:
    return any(g.paid for g in rows if g.id == grant_id)
