"""Contracts as the operator records them for an org: create, get, list.

What a contract puts on an invoice is ``billing.agreement_lines``; the money rules are pure
(``billing.contracts``); the kinds are ``billing.kinds.ContractKind``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.billing.kinds import ContractKind, ReservationBilling
from neocloud.billing.rating import TERMS
from neocloud.billing.tables import ContractRow
from neocloud.compute.tables import ReservationRow
from neocloud.db.engine import Database
from neocloud.db.pagination import Page, paginate
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import NotFound, ValidationFailed
from neocloud.kernel.ids import new_id
from neocloud.tenancy.tables import OrgRow

KINDS = tuple(ContractKind)
_YEAR = timedelta(days=365)


@dataclass(frozen=True, slots=True)
class ContractTerms:
    """What an operator asks for; ``kind`` says which of the optional fields are required."""

    org_id: str
    kind: str
    start_at: datetime | None = None
    end_at: datetime | None = None
    amount: Decimal | None = None
    gpu_model: str | None = None
    gpus: int | None = None
    rate: Decimal | None = None
    reservation_id: str | None = None
    term: str | None = None
    billing: str | None = None
    counterparty: str | None = None
    currency: str = "USD"
    note: str | None = None


def _require(value: object, kind: str, param: str) -> None:
    if value is None:
        raise ValidationFailed(
            f"a {kind} contract needs {param}", code="missing_contract_field", param=param
        )


def require_positive(value: Decimal | int | None, param: str, *, zero_ok: bool = False) -> None:
    """422 ``invalid_amount`` naming ``param`` when ``value`` is negative (or zero, unless
    ``zero_ok``); None passes."""
    if value is not None and (value < 0 or (value == 0 and not zero_ok)):
        raise ValidationFailed(
            f"{param} must be {'zero or more' if zero_ok else 'positive'}, not {value}",
            code="invalid_amount",
            param=param,
        )


def require_org(s: Session, org_id: str) -> None:
    """404 ``org_not_found`` unless the org exists."""
    if s.get(OrgRow, org_id) is None:
        raise NotFound(f"no organization {org_id} exists", code="org_not_found", param="org_id")


def _reservation_gpus(s: Session, rsv: ReservationRow) -> int:
    counts = s.scalars(sa.select(NodeRow.gpu_count).where(NodeRow.id.in_(rsv.node_ids))).all()
    return sum(counts) if len(counts) == rsv.node_count else rsv.node_count * 8


_Terms = tuple[datetime | None, datetime | None, str | None, int | None, str | None]


def _with_reservation(s: Session, t: ContractTerms) -> _Terms:
    """(start, end, GPU model, GPUs, term) of the contract: as given, except that a reservation
    contract takes its dates (unless given), GPU model and GPUs from the reservation; 404 when
    the org has no such reservation."""
    if t.kind != ContractKind.RESERVATION:
        return t.start_at, t.end_at, t.gpu_model, t.gpus, t.term
    _require(t.reservation_id, t.kind, "reservation_id")
    rsv = s.get(ReservationRow, t.reservation_id)
    if rsv is None or rsv.org_id != t.org_id:
        raise NotFound(
            f"no reservation {t.reservation_id} exists for {t.org_id}",
            code="reservation_not_found",
            param="reservation_id",
        )
    term = t.term or ("1y" if rsv.end_at - rsv.start_at >= _YEAR else "1m")
    gpus = _reservation_gpus(s, rsv)
    return t.start_at or rsv.start_at, t.end_at or rsv.end_at, rsv.gpu_model, gpus, term


def _check_terms(t: ContractTerms) -> None:
    """422 for an unknown kind, term or billing, or a non-positive amount, rate or GPU count."""
    if t.kind not in KINDS:
        raise ValidationFailed(
            f"kind must be one of {', '.join(KINDS)}, not {t.kind!r}",
            code="invalid_contract_kind",
            param="kind",
        )
    for param, value in (("amount", t.amount), ("rate", t.rate)):
        require_positive(value, param)
    require_positive(t.gpus, "gpus")
    if t.term is not None and t.term not in TERMS:
        raise ValidationFailed(
            f"term must be one of {', '.join(TERMS)}", code="invalid_term", param="term"
        )
    if t.billing is not None and t.billing not in tuple(ReservationBilling):
        raise ValidationFailed(
            "billing must be upfront or monthly", code="invalid_billing", param="billing"
        )


def create_contract(
    *, db: Database, clock: Clock, principal: Principal, terms: ContractTerms
) -> ContractRow:
    """Record a contract for an org (operator admins). 404 for an unknown org or reservation;
    422 for an unknown kind, a missing field, a negative amount or an end before the start.
    A reservation contract takes its dates, GPU model and GPU count from the reservation (the
    term: ``1y`` for a year or longer, else ``1m``, unless given)."""
    principal.require_operator(write=True)
    t = terms
    _check_terms(t)
    now = clock.now()
    with db.transaction() as s:
        require_org(s, t.org_id)
        start, end, gpu_model, gpus, term = _with_reservation(s, t)
        _require(start, t.kind, "start_at")
        _require(end, t.kind, "end_at")
        assert start is not None
        assert end is not None
        if end <= start:
            raise ValidationFailed(
                "a contract ends after it starts", code="invalid_dates", param="end_at"
            )
        if t.kind in (ContractKind.COMMIT_SPEND, ContractKind.PREPAID):
            _require(t.amount, t.kind, "amount")
        if t.kind in (ContractKind.COMMIT_CAPACITY, ContractKind.BACKSTOP):
            _require(gpus, t.kind, "gpus")
            _require(t.rate, t.kind, "rate")
        if t.kind == ContractKind.BACKSTOP:
            _require(gpu_model, t.kind, "gpu_model")
        reservation = t.kind == ContractKind.RESERVATION
        row = ContractRow(
            id=new_id("ctr", at=now),
            org_id=t.org_id,
            kind=t.kind,
            start_at=start,
            end_at=end,
            currency=t.currency,
            amount=t.amount,
            gpu_model=gpu_model,
            gpus=gpus,
            rate=t.rate,
            reservation_id=t.reservation_id if reservation else None,
            term=term if reservation else None,
            billing=(t.billing or ReservationBilling.MONTHLY) if reservation else None,
            counterparty=t.counterparty,
            note=t.note,
            created_by=principal.key_id,
            created_at=now,
        )
        s.add(row)
        s.flush()
        s.expunge(row)
        return row


def get_contract(*, db: Database, principal: Principal, contract_id: str) -> ContractRow:
    """A contract; tenants see their own org's only (others: not found)."""
    with db.transaction() as s:
        row = s.get(ContractRow, contract_id)
        if row is None or not (principal.is_operator or principal.org_id == row.org_id):
            raise NotFound(f"no contract {contract_id} exists", code="contract_not_found")
        s.expunge(row)
        return row


def list_contracts(
    *, db: Database, principal: Principal, org_id: str, limit: int, after: str | None
) -> Page[ContractRow]:
    """The org's contracts, oldest first, a page at a time."""
    principal.require_org_role(org_id, Role.VIEWER)
    with db.transaction() as s:
        query = sa.select(ContractRow).where(ContractRow.org_id == org_id)
        page = paginate(s, query, ContractRow.id, limit=limit, after=after)
        s.expunge_all()
        return page
