"""Contracts and credits stored per org: validation, the lines they add, backlog."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from neocloud.billing import agreement_lines, contract_service, reports
from neocloud.billing.contract_service import ContractTerms
from neocloud.billing.contracts import Spend
from neocloud.billing.rating import Period
from neocloud.client import Client
from neocloud.db.engine import Database
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.errors import NotFound, PermissionDenied, ValidationFailed

OPERATOR = Principal("key_op", "usr_op", "org_op", Role.OWNER, is_operator=True)
APRIL = Period.month("2026-04")


def _t(year: int, month: int, day: int = 1) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def _contract(db: Database, clock: VirtualClock, **kw: object) -> str:
    row = contract_service.create_contract(
        db=db,
        clock=clock,
        principal=OPERATOR,
        terms=ContractTerms(**kw),  # type: ignore[arg-type]
    )
    return row.id


def test_golden_commitment_true_up(acme: Client, db: Database, clock: VirtualClock) -> None:
    org = acme.get("orgs")["data"][0]["id"]
    ctr = _contract(
        db,
        clock,
        org_id=org,
        kind="commit_spend",
        start_at=_t(2026, 4),
        end_at=_t(2027, 4),
        amount=Decimal("100000.00"),
    )
    with db.transaction() as s:
        lines = agreement_lines.agreement_charges(
            s, org, APRIL, [Spend("H100-SXM-80GB.on_demand", Decimal("82345.67"))], now=_t(2026, 5)
        )
        more = agreement_lines.agreement_charges(
            s, org, APRIL, [Spend("H100-SXM-80GB.on_demand", Decimal("100000.01"))], now=_t(2026, 5)
        )
    assert [(c.kind, c.amount, c.reference_id) for c in lines] == [
        ("true_up", Decimal("17654.33"), ctr)
    ]
    assert more == []  # usage above the commitment: nothing to true up


def test_backlog_is_what_is_left_of_each_contract(
    acme: Client, db: Database, clock: VirtualClock
) -> None:
    org = acme.get("orgs")["data"][0]["id"]
    _contract(
        db,
        clock,
        org_id=org,
        kind="commit_spend",
        start_at=_t(2026, 4),
        end_at=_t(2027, 4),
        amount=Decimal("100000"),
    )
    _contract(
        db,
        clock,
        org_id=org,
        kind="commit_capacity",
        start_at=_t(2026, 4),
        end_at=_t(2026, 4, 11),
        gpus=64,
        rate=Decimal("2.10"),
    )
    _contract(
        db,
        clock,
        org_id=org,
        kind="prepaid",
        start_at=_t(2026, 4),
        end_at=_t(2028, 4),
        amount=Decimal("5000"),
    )
    with db.transaction() as s:
        at_start = reports.backlog_by_org(s, _t(2026, 4))
        half_way = reports.backlog_by_org(s, _t(2026, 10))
        after = reports.backlog_by_org(s, _t(2028, 5))
    # 12 months x 100,000 + 64 GPUs x 240 h x 2.10 + 5,000 prepaid
    assert at_start == {org: Decimal("1200000.00") + Decimal("32256.00") + Decimal("5000.00")}
    assert half_way == {org: Decimal("600000.00") + Decimal("5000.00")}
    assert after == {}


def test_bad_contracts_are_precise_errors_and_change_nothing(
    acme: Client, db: Database, clock: VirtualClock
) -> None:
    org = acme.get("orgs")["data"][0]["id"]
    base = {"org_id": org, "kind": "commit_spend", "start_at": _t(2026, 4), "end_at": _t(2026, 5)}
    cases: list[tuple[dict[str, object], type[Exception], str, str | None]] = [
        ({**base, "org_id": "org_nope", "amount": Decimal(1)}, NotFound, "org_not_found", "org_id"),
        (
            {**base, "end_at": _t(2026, 3), "amount": Decimal(1)},
            ValidationFailed,
            "invalid_dates",
            "end_at",
        ),
        ({**base, "amount": Decimal(-1)}, ValidationFailed, "invalid_amount", "amount"),
        (
            {**base, "kind": "barter", "amount": Decimal(1)},
            ValidationFailed,
            "invalid_contract_kind",
            "kind",
        ),
        (base, ValidationFailed, "missing_contract_field", "amount"),
        (
            {**base, "kind": "commit_capacity", "gpus": 8},
            ValidationFailed,
            "missing_contract_field",
            "rate",
        ),
        (
            {**base, "kind": "reservation", "reservation_id": "rsv_x"},
            NotFound,
            "reservation_not_found",
            "reservation_id",
        ),
    ]
    for kw, exc, code, param in cases:
        with pytest.raises(exc) as caught:
            _contract(db, clock, **kw)
        assert (caught.value.code, caught.value.param) == (code, param), kw  # type: ignore[attr-defined]
    page = contract_service.list_contracts(
        db=db, principal=OPERATOR, org_id=org, limit=10, after=None
    )
    assert page.items == []
    tenant = Principal("key_t", "usr_t", org, Role.OWNER, is_operator=False)
    with pytest.raises(PermissionDenied):
        contract_service.create_contract(
            db=db,
            clock=clock,
            principal=tenant,
            terms=ContractTerms(**{**base, "amount": Decimal(1)}),  # type: ignore[arg-type]
        )
