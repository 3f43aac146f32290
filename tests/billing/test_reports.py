"""Operator revenue reports on a real database (both backends), with figures known in advance:
revenue by org, SKU, class and month; backlog; concentration (top-1, top-2, HHI)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
import sqlalchemy as sa

from neocloud.billing import reports, service
from neocloud.billing.contract_service import ContractTerms, create_contract
from neocloud.billing.usage import TOKENS, UsageEvent, record_usage_events
from neocloud.client import Client
from neocloud.compute.tables import AllocationRow
from neocloud.db.engine import Database
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.errors import PermissionDenied, ValidationFailed

OPERATOR = Principal("key_op", "usr_op", "org_op", Role.OWNER, is_operator=True)
TENANT = Principal("key_t", "usr_t", "org_a", Role.OWNER, is_operator=False)
H100 = "H100-SXM-80GB"
NOW = datetime(2026, 4, 10, tzinfo=UTC)


def _at(day: int, hour: float = 0, month: int = 3) -> datetime:
    return datetime(2026, month, day, tzinfo=UTC) + timedelta(hours=hour)


def _allocations(db: Database, rows: list[tuple[str, str, int, datetime, datetime]]) -> None:
    with db.transaction() as s:
        node = s.scalars(sa.select(NodeRow.id).where(NodeRow.gpu_model == H100)).first()
        assert node is not None
        for i, (org, cls, gpus, start, end) in enumerate(rows):
            s.add(
                AllocationRow(
                    id=f"alc_{i}",
                    org_id=org,
                    node_id=node,
                    gpu_model=H100,
                    gpu_count=gpus,
                    gpu_indices=list(range(gpus)),
                    vcpus=16,
                    ram_gib=128,
                    cls=cls,
                    start_at=start,
                    end_at=end,
                    created_at=start,
                )
            )


@pytest.fixture
def usage(fleet: Client, db: Database, clock: VirtualClock) -> None:
    """$2.00/GPU-hour on demand, $1.00 spot, llama at $0.20/$0.60 per 1M tokens, from now
    (2026-03-01 12:00). March: org_a $500 on demand; org_b $200 on demand + $100 spot; org_c
    $50 of tokens. April: org_c $150 on demand. Total $1,000."""
    service.publish_price_book(
        db=db,
        clock=clock,
        principal=OPERATOR,
        effective_from=clock.now(),
        gpu_prices={f"{H100}.on_demand": Decimal("2.00"), f"{H100}.spot": Decimal("1.00")},
        token_prices={"llama": {"input_per_1m": Decimal("0.20"), "output_per_1m": Decimal("0.60")}},
    )
    _allocations(
        db,
        [
            ("org_a", "on_demand", 8, _at(20), _at(20, 31.25)),  # 250 GPU-h x $2
            ("org_b", "on_demand", 4, _at(21), _at(22, 1)),  # 100 GPU-h x $2
            ("org_b", "spot", 4, _at(21), _at(22, 1)),  # 100 GPU-h x $1
            ("org_c", "on_demand", 1, _at(2, 0, 4), _at(5, 3, 4)),  # 75 GPU-h x $2
        ],
    )
    clock.set(datetime(2026, 3, 25, tzinfo=UTC))
    data = {"model": "llama", "input_tokens": 100_000_000, "output_tokens": 50_000_000}
    event = UsageEvent("r1", "studio", TOKENS, "prj", _at(20), data)  # $20 + $30
    assert record_usage_events(db=db, clock=clock, org_id="org_c", events=[event])
    clock.set(NOW)


@pytest.mark.usefixtures("usage")
def test_revenue_by_org_sku_class_and_month(db: Database, clock: VirtualClock) -> None:
    report = reports.revenue_report(
        db=db, clock=clock, principal=OPERATOR, start="2026-02", end="2026-05"
    )
    assert report.total == Decimal("1000.00")
    assert report.by("org_id") == {
        "org_a": Decimal("500.00"),
        "org_b": Decimal("300.00"),
        "org_c": Decimal("200.00"),
    }
    assert report.by("month") == {"2026-03": Decimal("850.00"), "2026-04": Decimal("150.00")}
    assert report.by("cls") == {
        "on_demand": Decimal("850.00"),
        "spot": Decimal("100.00"),
        "tokens": Decimal("50.00"),
    }
    assert report.by("sku") == {
        f"{H100}.on_demand": Decimal("850.00"),
        f"{H100}.spot": Decimal("100.00"),
        "llama.tokens": Decimal("50.00"),
    }
    assert [(ln.month, ln.org_id, ln.cls, ln.amount) for ln in report.lines] == [
        ("2026-03", "org_a", "on_demand", Decimal("500.00")),
        ("2026-03", "org_b", "on_demand", Decimal("200.00")),
        ("2026-03", "org_b", "spot", Decimal("100.00")),
        ("2026-03", "org_c", "tokens", Decimal("50.00")),
        ("2026-04", "org_c", "on_demand", Decimal("150.00")),
    ]
    # The same facts rated again give the same report; one month alone is its share.
    again = reports.revenue_report(
        db=db, clock=clock, principal=OPERATOR, start="2026-02", end="2026-05"
    )
    assert again.lines == report.lines
    april = reports.revenue_report(
        db=db, clock=clock, principal=OPERATOR, start="2026-04", end="2026-04"
    )
    assert april.total == Decimal("150.00")


@pytest.mark.usefixtures("usage")
def test_concentration_over_a_trailing_window(db: Database, clock: VirtualClock) -> None:
    conc = reports.concentration_report(db=db, clock=clock, principal=OPERATOR, window_days=30)
    assert conc.total == Decimal("1000.00")
    assert (conc.top1, conc.top2, conc.hhi, conc.largest) == (
        Decimal("0.5"),
        Decimal("0.8"),
        Decimal("3800"),  # 50² + 30² + 20²
        "org_a",
    )
    # A shorter window sees only April's org_c (from 2026-04-03 00:00: 51 of its 75 GPU-hours).
    short = reports.concentration_report(db=db, clock=clock, principal=OPERATOR, window_days=7)
    assert (short.total, short.top1, short.hhi) == (Decimal("102.00"), Decimal(1), Decimal(10000))


def test_concentration_of_known_shares() -> None:
    revenue = {"a": Decimal("70"), "b": Decimal("20"), "c": Decimal("7"), "d": Decimal("3")}
    revenue["refund"] = Decimal("-5")  # not a customer share
    conc = reports.concentration_of(revenue, NOW - timedelta(days=1), NOW, "USD")
    shares = [Fraction(v, 100) for v in (70, 20, 7, 3)]
    want = sum(float(s * 100) ** 2 for s in shares)  # 4900 + 400 + 49 + 9
    assert float(conc.hhi) == pytest.approx(want) == 5358
    assert (conc.top1, conc.top2, conc.largest) == (Decimal("0.7"), Decimal("0.9"), "a")
    assert list(conc.shares) == ["a", "b", "c", "d"]
    empty = reports.concentration_of({}, NOW - timedelta(days=1), NOW, "USD")
    assert (empty.total, empty.top1, empty.hhi, empty.largest) == (
        Decimal(0),
        Decimal(0),
        Decimal(0),
        None,
    )


def test_backlog_and_backstop_revenue(
    acme: Client, db: Database, clock: VirtualClock, usage: None
) -> None:
    org = acme.get("orgs")["data"][0]["id"]
    create_contract(
        db=db,
        clock=clock,
        principal=OPERATOR,
        terms=ContractTerms(
            org_id=org,
            kind="commit_spend",
            start_at=_at(1, 0, 5),
            end_at=_at(1, 0, 8),
            amount=Decimal("10000.00"),
        ),
    )
    # A third party pays $1.00/GPU-hour for 16 H100s of 2026-04-06 that no tenant used.
    create_contract(
        db=db,
        clock=clock,
        principal=OPERATOR,
        terms=ContractTerms(
            org_id=org,
            kind="backstop",
            start_at=_at(6, 0, 4),
            end_at=_at(7, 0, 4),
            gpu_model=H100,
            gpus=16,
            rate=Decimal("1.00"),
            counterparty="GPU Vendor Inc.",
        ),
    )
    backlog = reports.backlog_report(db=db, clock=clock, principal=OPERATOR)
    assert backlog.by_org == {org: Decimal("30000.00")}  # May, June, July
    assert backlog.total == Decimal("30000.00")
    assert backlog.names == {org: "acme"}  # what an operator recognises
    report = reports.revenue_report(
        db=db, clock=clock, principal=OPERATOR, start="2026-04", end="2026-04"
    )
    assert report.by("cls") == {"backstop": Decimal("384.00"), "on_demand": Decimal("150.00")}
    assert report.by("org_id")[org] == Decimal("384.00")


def test_reports_are_for_operators_and_check_their_input(db: Database, clock: VirtualClock) -> None:
    with pytest.raises(PermissionDenied):
        reports.revenue_report(db=db, clock=clock, principal=TENANT, start="2026-03", end="2026-03")
    with pytest.raises(PermissionDenied):
        reports.backlog_report(db=db, clock=clock, principal=TENANT)
    with pytest.raises(PermissionDenied):
        reports.concentration_report(db=db, clock=clock, principal=TENANT)
    for start, end, param in (
        ("2026-13", "2026-03", "from"),
        ("2026-03", "march", "to"),
        ("2026-04", "2026-03", "to"),
        ("2000-01", "2026-03", "to"),
    ):
        with pytest.raises(ValidationFailed) as err:
            reports.revenue_report(db=db, clock=clock, principal=OPERATOR, start=start, end=end)
        assert err.value.param == param
    with pytest.raises(ValidationFailed):
        reports.concentration_report(db=db, clock=clock, principal=OPERATOR, window_days=0)


def test_utilization_steps_allocated_over_in_service_gpu_hours(
    fleet: Client, db: Database, clock: VirtualClock
) -> None:
    _allocations(db, [("org_a", "on_demand", 8, _at(20), _at(20, 12))])  # 96 GPU-h
    clock.set(_at(21))
    with db.transaction() as s:
        gpus = s.scalar(sa.select(sa.func.sum(NodeRow.gpu_count)))
    assert gpus
    points = reports.utilization_series(
        db=db, clock=clock, principal=OPERATOR, window_days=2, step_hours=12
    )
    assert [p.start for p in points] == [_at(19), _at(19, 12), _at(20), _at(20, 12)]
    assert [p.end for p in points][-1] == _at(21)
    assert [p.gpu_hours for p in points] == [0, 0, 96, 0]
    assert [p.capacity_gpu_hours for p in points] == [gpus * 12] * 4
    assert points[2].utilization == pytest.approx(96 / (gpus * 12))
    assert points[0].utilization == 0
    with pytest.raises(PermissionDenied):
        reports.utilization_series(
            db=db, clock=clock, principal=TENANT, window_days=2, step_hours=12
        )
    with pytest.raises(ValidationFailed) as exc:
        reports.utilization_series(
            db=db, clock=clock, principal=OPERATOR, window_days=366, step_hours=1
        )
    assert exc.value.param == "step_hours"
    answer = fleet.get("billing/reports/utilization", window_days=2, step_hours=12)
    assert answer["object"] == "billing.utilization"
    assert [p["gpu_hours"] for p in answer["data"]] == [0, 0, 96, 0]
