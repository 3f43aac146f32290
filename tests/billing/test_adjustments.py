"""The pure invoice-line arithmetic (``billing.adjustments``), case by case: no database.

Each table row is one situation a draft meets: a late fact, a lowered month, a price change
inside a month, a true-up a late fact shrinks, a credit note giving credit back.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from neocloud.billing.adjustments import (
    AgreementKey,
    Billed,
    LineDraft,
    adjustment_lines,
    agreement_deltas,
    charge_lines,
    line_json,
    period_name,
    previous,
    restorations,
    total,
    usage_lines,
)
from neocloud.billing.contracts import Charge
from neocloud.billing.kinds import ContractKind, InvoiceState, LineKind
from neocloud.billing.rating import Line, Period, Sku
from neocloud.kernel.money import Money

H100 = Sku("H100", "on_demand")
A100 = Sku("A100", "on_demand")
D = Decimal


def _line(sku: Sku, secs: int, amount: str, facts: str, project: str | None = None) -> Line:
    """A rated GPU line at $2.00 per GPU-hour; ``facts``: one letter per fact id."""
    return Line("org", project, sku, D(secs), D(2), Money(D(amount)), tuple(facts))


def _billed(sku: Sku, secs: int, amount: str, facts: str, project: str | None = None) -> Billed:
    return Billed(sku.code, project, D(secs), D(amount), tuple(facts))


# (rerated now, billed before) -> (SKU, project, GPU-seconds, amount, new facts) per line
ADJUSTMENTS: list[tuple[str, list[Line], list[Billed], list[tuple[object, ...]]]] = [
    ("nothing rated, nothing billed", [], [], []),
    (
        "unchanged: no line",
        [_line(H100, 3600, "2.00", "a")],
        [_billed(H100, 3600, "2.00", "a")],
        [],
    ),
    (
        "a late fact adds GPU time: only the new fact is on the line",
        [_line(H100, 5400, "3.00", "ab")],
        [_billed(H100, 3600, "2.00", "a")],
        [("H100.on_demand", None, D(1800), D("1.00"), ("b",))],
    ),
    (
        "a late failure lowers the month: negative, no new facts",
        [_line(H100, 1800, "1.00", "a")],
        [_billed(H100, 3600, "2.00", "a")],
        [("H100.on_demand", None, D(-1800), D("-1.00"), ())],
    ),
    (
        "a SKU no longer rated is taken back whole",
        [],
        [_billed(H100, 3600, "2.00", "a")],
        [("H100.on_demand", None, D(-3600), D("-2.00"), ())],
    ),
    (
        "billed on two invoices (usage then adjustment): compared with their sum",
        [_line(H100, 5400, "3.00", "ab")],
        [_billed(H100, 3600, "2.00", "a"), _billed(H100, 1800, "1.00", "b")],
        [],
    ),
    (
        "a price change inside the month gives two lines: compared with their sum",
        [_line(H100, 3600, "2.00", "a"), _line(H100, 3600, "3.00", "b")],
        [_billed(H100, 3600, "2.00", "a")],
        [("H100.on_demand", None, D(3600), D("3.00"), ("b",))],
    ),
    (
        "same GPU time, another amount (a rounding change): still a line",
        [_line(H100, 3600, "2.01", "a")],
        [_billed(H100, 3600, "2.00", "a")],
        [("H100.on_demand", None, D(0), D("0.01"), ())],
    ),
    (
        "one line per (SKU, project), in SKU then project order (no project first)",
        [
            _line(H100, 3600, "2.00", "c", "prj_b"),
            _line(H100, 3600, "2.00", "b"),
            _line(A100, 3600, "2.00", "a", "prj_a"),
        ],
        [],
        [
            ("A100.on_demand", "prj_a", D(3600), D("2.00"), ("a",)),
            ("H100.on_demand", None, D(3600), D("2.00"), ("b",)),
            ("H100.on_demand", "prj_b", D(3600), D("2.00"), ("c",)),
        ],
    ),
]


@pytest.mark.parametrize(
    ("rerated", "billed", "want"), [c[1:] for c in ADJUSTMENTS], ids=[c[0] for c in ADJUSTMENTS]
)
def test_adjustment_lines(
    rerated: list[Line], billed: list[Billed], want: list[tuple[object, ...]]
) -> None:
    got = adjustment_lines(rerated, billed, "2026-03")
    assert [(d.sku, d.project_id, d.gpu_seconds, d.amount, d.fact_ids) for d in got] == want
    assert all(d.kind == LineKind.ADJUSTMENT and d.usage_period == "2026-03" for d in got)
    assert adjustment_lines(rerated, billed, "2026-03") == got  # pure: the same again


def _charge(kind: LineKind, amount: str, ref: str = "ctr_1", secs: int = 0) -> Charge:
    sku = "H100.reserved.1m" if kind != LineKind.TRUE_UP else ContractKind.COMMIT_SPEND
    return Charge(kind, "2026-03", sku, D(amount), ref, ("x",), D(secs), D("1.50"))


TRUE_UP_KEY: AgreementKey = (LineKind.TRUE_UP, "ctr_1", ContractKind.COMMIT_SPEND)
RESERVED_KEY: AgreementKey = (LineKind.RESERVED_USAGE, "ctr_1", "H100.reserved.1m")

# (agreement lines now, billed before) -> (kind, reference, GPU-seconds, amount) per line
DELTAS: list[
    tuple[str, list[Charge], dict[AgreementKey, tuple[Decimal, Decimal]], list[tuple[object, ...]]]
] = [
    ("nothing either way", [], {}, []),
    (
        "unchanged true-up: no line",
        [_charge(LineKind.TRUE_UP, "40.00")],
        {TRUE_UP_KEY: (D("40.00"), D(0))},
        [],
    ),
    (
        "a late fact the commitment paid for is taken back off its true-up",
        [_charge(LineKind.TRUE_UP, "25.00")],
        {TRUE_UP_KEY: (D("40.00"), D(0))},
        [(LineKind.TRUE_UP, "ctr_1", D(0), D("-15.00"))],
    ),
    (
        "the true-up is gone: all of it taken back",
        [],
        {TRUE_UP_KEY: (D("40.00"), D(0))},
        [(LineKind.TRUE_UP, "ctr_1", D(0), D("-40.00"))],
    ),
    (
        "covered usage of a reservation grows with a late fact (summed per key)",
        [
            _charge(LineKind.RESERVED_USAGE, "-2.00", secs=-3600),
            _charge(LineKind.RESERVED_USAGE, "-1.00", secs=-1800),
        ],
        {RESERVED_KEY: (D("-2.00"), D(-3600))},
        [(LineKind.RESERVED_USAGE, "ctr_1", D(-1800), D("-1.00"))],
    ),
    (
        "credits, drawdowns and prepayments do not depend on the facts: ignored",
        [
            _charge(LineKind.CREDIT, "-5.00", "cred_1"),
            _charge(LineKind.DRAWDOWN, "-5.00"),
            _charge(LineKind.PREPAYMENT, "100.00"),
        ],
        {},
        [],
    ),
]


@pytest.mark.parametrize(
    ("fresh", "billed", "want"), [c[1:] for c in DELTAS], ids=[c[0] for c in DELTAS]
)
def test_agreement_deltas(
    fresh: list[Charge],
    billed: dict[AgreementKey, tuple[Decimal, Decimal]],
    want: list[tuple[object, ...]],
) -> None:
    got = agreement_deltas(fresh, billed, "2026-03")
    assert [(d.kind, d.reference_id, d.gpu_seconds, d.amount) for d in got] == want
    assert all(d.usage_period == "2026-03" and d.project_id is None for d in got)


PAID_BY: list[tuple[str, str | None, Decimal]] = [
    ("prepaid", "ctr_pre", D("-30.00")),
    ("credit.paid", "cred_paid", D("-20.00")),
    ("credit.promotional", "cred_promo", D("-10.00")),
]

# (what paid the invoice, given back before, value lowered) -> (reference, amount) restored
RESTORATIONS: list[
    tuple[
        str,
        list[tuple[str, str | None, Decimal]],
        dict[str, Decimal],
        Decimal,
        list[tuple[str, str]],
    ]
] = [
    ("nothing lowered: nothing back", PAID_BY, {}, D(0), []),
    ("paid in cash: nothing to restore", [], {}, D("5.00"), []),
    ("promotional credit first", PAID_BY, {}, D("4.00"), [("cred_promo", "4.00")]),
    (
        "then paid credit, then the prepaid balance",
        PAID_BY,
        {},
        D("35.00"),
        [("cred_promo", "10.00"), ("cred_paid", "20.00"), ("ctr_pre", "5.00")],
    ),
    (
        "never more than paid: the rest is owed in cash",
        PAID_BY,
        {},
        D("100.00"),
        [("cred_promo", "10.00"), ("cred_paid", "20.00"), ("ctr_pre", "30.00")],
    ),
    (
        "less what earlier credit notes gave back",
        PAID_BY,
        {"cred_promo": D("10.00"), "cred_paid": D("5.00")},
        D("20.00"),
        [("cred_paid", "15.00"), ("ctr_pre", "5.00")],
    ),
    ("a line without a reference is skipped", [("credit.paid", None, D("-9"))], {}, D(1), []),
]


@pytest.mark.parametrize(
    ("paid_by", "given", "value", "want"),
    [c[1:] for c in RESTORATIONS],
    ids=[c[0] for c in RESTORATIONS],
)
def test_restorations(
    paid_by: list[tuple[str, str | None, Decimal]],
    given: dict[str, Decimal],
    value: Decimal,
    want: list[tuple[str, str]],
) -> None:
    before = dict(given)
    got = restorations(paid_by, given, value)
    assert [(r["reference_id"], r["amount"]) for r in got] == want
    assert all(r["kind"] == "restored" and r["sku"] in {p[0] for p in paid_by} for r in got)
    assert given == before  # the caller's mapping is left as it was


@pytest.mark.parametrize(
    ("month", "before"),
    [("2026-03", "2026-02"), ("2026-01", "2025-12"), ("2024-03", "2024-02")],
)
def test_previous_month(month: str, before: str) -> None:
    assert period_name(previous(Period.month(month))) == before


def test_usage_and_charge_lines_keep_every_field() -> None:
    (usage,) = usage_lines([_line(H100, 3600, "2.00", "ab", "prj")], "2026-03")
    assert usage == LineDraft(
        LineKind.USAGE, "2026-03", "H100.on_demand", "prj", D(3600), D(2), D("2.00"), ("a", "b")
    )
    charge = _charge(LineKind.RESERVATION, "120.00", secs=7200)
    (line,) = charge_lines([charge])
    assert line == LineDraft(
        LineKind.RESERVATION,
        "2026-03",
        "H100.reserved.1m",
        None,
        D(7200),
        D("1.50"),
        D("120.00"),
        ("x",),
        "ctr_1",
    )
    assert total([usage, line]) == D("122.00")


def test_a_credit_note_line_is_stored_as_plain_json() -> None:
    d = LineDraft(
        LineKind.ADJUSTMENT, "2026-02", "H100.on_demand", None, D(-1800), D(2), D("-1.00"), ()
    )
    assert json.dumps(line_json(d)) == (
        '{"kind": "adjustment", "usage_period": "2026-02", "sku": "H100.on_demand", '
        '"project_id": null, "gpu_seconds": "-1800", "unit_price": "2", "amount": "-1.00", '
        '"fact_ids": [], "reference_id": null, "input_tokens": null, "output_tokens": null, '
        '"input_price_per_1m": null, "output_price_per_1m": null}'
    )


@pytest.mark.parametrize(
    ("member", "stored"),
    [
        (ContractKind.COMMIT_SPEND, "commit_spend"),
        (ContractKind.COMMIT_CAPACITY, "commit_capacity"),
        (ContractKind.PREPAID, "prepaid"),
        (ContractKind.RESERVATION, "reservation"),
        (ContractKind.BACKSTOP, "backstop"),
        (LineKind.USAGE, "usage"),
        (LineKind.ADJUSTMENT, "adjustment"),
        (LineKind.RESERVATION, "reservation"),
        (LineKind.RESERVED_USAGE, "reserved_usage"),
        (LineKind.TRUE_UP, "true_up"),
        (LineKind.PREPAYMENT, "prepaid"),
        (LineKind.DRAWDOWN, "drawdown"),
        (LineKind.CREDIT, "credit"),
        (LineKind.RESTORED, "restored"),
        (InvoiceState.DRAFT, "draft"),
        (InvoiceState.FINALIZED, "finalized"),
    ],
)
def test_kinds_are_the_strings_stored_before(member: str, stored: str) -> None:
    assert member == stored
    assert f"{member}" == stored
    assert json.dumps(member) == f'"{stored}"'
    assert {stored: 1}[member] == 1  # and look up stored rows' values
