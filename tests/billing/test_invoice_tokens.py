"""Stored invoices show what their Studio token lines bill (both backends): input and output
tokens and the prices per 1M applied, over HTTP as JSON and CSV and in the CLI, on usage lines
and on the adjustment a late token event makes; re-rating gives the same lines."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
import sqlalchemy as sa
import typer
from typer.testing import CliRunner

from neocloud.billing import invoices, service
from neocloud.billing.adjustments import Billed, adjustment_lines, usage_lines
from neocloud.billing.rating import Line, Period, Sku, TokenCounts
from neocloud.billing.tables import InvoiceLineRow
from neocloud.billing.usage import TOKENS, UsageEvent, record_usage_events
from neocloud.cli import output
from neocloud.cli.billing import APPS
from neocloud.cli.state import STATE
from neocloud.client import Client
from neocloud.db.engine import Database
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.money import Money

OPERATOR = Principal("key_op", "usr_op", "org_op", Role.OWNER, is_operator=True)
MARCH, APRIL = Period.month("2026-03"), Period.month("2026-04")
CHANGE = datetime(2026, 3, 16, tzinfo=UTC)
ORG = "org_tok"
MILLION = Decimal(1_000_000)
# (input, output) per 1M tokens before and after the price change; batch: half off.
OLD, NEW = (Decimal("0.20"), Decimal("0.60")), (Decimal("0.10"), Decimal("0.40"))

runner = CliRunner()
cli = typer.Typer()
for _name, _sub in APPS.items():
    cli.add_typer(_sub, name=_name)


def _publish(db: Database, clock: VirtualClock, at: datetime, prices: tuple[Decimal, ...]) -> None:
    service.publish_price_book(
        db=db,
        clock=clock,
        principal=OPERATOR,
        effective_from=at,
        gpu_prices={},
        token_prices={
            "llama": {
                "input_per_1m": prices[0],
                "output_per_1m": prices[1],
                "batch_discount": Decimal("0.5"),
            }
        },
    )


def _tokens(
    db: Database,
    clock: VirtualClock,
    eid: str,
    at: datetime,
    tin: int,
    tout: int,
    batch: bool = False,
) -> None:
    data = {"model": "llama", "input_tokens": tin, "output_tokens": tout, "batch": batch}
    event = UsageEvent(eid, "studio", TOKENS, "prj_1", at, data)
    result = record_usage_events(db=db, clock=clock, org_id=ORG, events=[event])
    assert result.accepted == 1


def _cents(tin: int, tout: int, p_in: Decimal, p_out: Decimal) -> Decimal:
    """What a line of these tokens at these prices per 1M comes to, rounded once."""
    exact = (Decimal(tin) * p_in + Decimal(tout) * p_out) / MILLION
    return exact.quantize(Decimal("0.01"), ROUND_HALF_UP)


def _token_rows(text: str) -> list[dict[str, str]]:
    return [r for r in csv.DictReader(io.StringIO(text)) if ".tokens" in r["sku"]]


def _stored(db: Database, invoice_id: str) -> list[tuple[Any, ...]]:
    """An invoice's lines as stored, without their row ids."""
    with db.transaction() as s:
        rows = s.scalars(
            sa.select(InvoiceLineRow)
            .where(InvoiceLineRow.invoice_id == invoice_id)
            .order_by(InvoiceLineRow.position)
        )
        return [
            (
                r.position,
                r.kind,
                r.usage_period,
                r.sku,
                r.amount,
                tuple(r.fact_ids),
                r.input_tokens,
                r.output_tokens,
                r.input_price_per_1m,
                r.output_price_per_1m,
            )
            for r in rows
        ]


def test_token_counts_and_prices_on_stored_invoices(
    fleet: Client, db: Database, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _publish(db, clock, clock.now(), OLD)
    _publish(db, clock, CHANGE, NEW)
    clock.set(datetime(2026, 3, 25, tzinfo=UTC))
    _tokens(db, clock, "t1", CHANGE - timedelta(hours=1), 1_500_000, 250_000)
    _tokens(db, clock, "t2", CHANGE + timedelta(hours=1), 700_000, 300_000)
    _tokens(db, clock, "t3", CHANGE + timedelta(hours=2), 400_000, 100_001)
    _tokens(db, clock, "b1", CHANGE + timedelta(hours=3), 2_000_000, 1_000_000, batch=True)

    clock.set(datetime(2026, 4, 5, tzinfo=UTC))
    inv_id = invoices.build_invoice(
        db=db, clock=clock, principal=OPERATOR, org_id=ORG, period=MARCH
    )
    invoices.finalize_invoice(db=db, clock=clock, principal=OPERATOR, invoice_id=inv_id)

    half = Decimal("0.5")
    expected = [  # (sku, input, output, input per 1M, output per 1M)
        ("llama.tokens", 1_500_000, 250_000, *OLD),
        ("llama.tokens", 1_100_000, 400_001, *NEW),
        ("llama.tokens.batch", 2_000_000, 1_000_000, NEW[0] * half, NEW[1] * half),
    ]
    wire = fleet.invoices.get(inv_id)  # type: ignore[attr-defined]
    assert wire["state"] == "finalized"
    lines = [ln for ln in wire["lines"] if ".tokens" in ln["sku"]]
    got = [
        (
            ln["sku"],
            ln["input_tokens"],
            ln["output_tokens"],
            Decimal(ln["input_price_per_1m"]["amount"]),
            Decimal(ln["output_price_per_1m"]["amount"]),
        )
        for ln in lines
    ]
    assert got == expected
    for ln, (_, tin, tout, p_in, p_out) in zip(lines, expected, strict=True):
        # the line's amount follows from what it shows, rounded once
        assert Decimal(ln["amount"]["amount"]) == _cents(tin, tout, p_in, p_out)
        assert ln["input_price_per_1m"]["currency"] == "USD"
    assert Decimal(wire["total"]["amount"]) == sum((_cents(*e[1:]) for e in expected), Decimal(0))

    rows = _token_rows(fleet.invoices.csv(inv_id))  # type: ignore[attr-defined]
    assert [
        (
            r["sku"],
            int(r["input_tokens"]),
            int(r["output_tokens"]),
            Decimal(r["input_price_per_1m"]),
            Decimal(r["output_price_per_1m"]),
        )
        for r in rows
    ] == expected
    assert [Decimal(r["amount"]) for r in rows] == [_cents(*e[1:]) for e in expected]

    # the CLI prints them
    monkeypatch.setattr(output.out, "width", 250)
    monkeypatch.setattr(STATE, "_client", fleet)
    result = runner.invoke(cli, ["invoices", "get", inv_id])
    assert result.exit_code == 0, result.output
    assert "1500000 in / 250000 out" in result.output
    assert "0.2 / 0.6 USD" in result.output
    assert "2000000 in / 1000000 out" in result.output
    assert "0.05 / 0.2 USD" in result.output
    result = runner.invoke(cli, ["billing", "invoice", "--org", ORG, "--period", "2026-03"])
    assert result.exit_code == 0, result.output
    assert "1100000 in / 400001 out" in result.output  # the preview's token lines
    assert "0.1 / 0.4 USD" in result.output

    # A late March event at the old price: April's adjustment shows its tokens and prices.
    clock.set(datetime(2026, 4, 6, tzinfo=UTC))
    _tokens(db, clock, "late", CHANGE - timedelta(days=1), 3_000_000, 50_000)
    april_id = invoices.build_invoice(
        db=db, clock=clock, principal=OPERATOR, org_id=ORG, period=APRIL
    )
    april = fleet.invoices.get(april_id)  # type: ignore[attr-defined]
    adjustments = [ln for ln in april["lines"] if ln["kind"] == "adjustment"]
    assert [
        (
            ln["usage_period"],
            ln["sku"],
            ln["input_tokens"],
            ln["output_tokens"],
            ln["input_price_per_1m"]["amount"],
            ln["output_price_per_1m"]["amount"],
            ln["amount"]["amount"],
            len(ln["fact_ids"]),
        )
        for ln in adjustments
    ] == [("2026-03", "llama.tokens", 3_000_000, 50_000, "0.2", "0.6", "0.63", 1)]
    assert Decimal("0.63") == _cents(3_000_000, 50_000, *OLD)
    (row,) = _token_rows(fleet.invoices.csv(april_id))  # type: ignore[attr-defined]
    assert (row["kind"], row["input_tokens"], row["output_tokens"]) == (
        "adjustment",
        "3000000",
        "50000",
    )
    assert (row["input_price_per_1m"], row["output_price_per_1m"]) == ("0.2", "0.6")

    # Re-rating gives identical lines: April rebuilt, March re-rated against what it stored.
    before = _stored(db, april_id)
    invoices.build_invoice(db=db, clock=clock, principal=OPERATOR, org_id=ORG, period=APRIL)
    assert _stored(db, april_id) == before
    march = _stored(db, inv_id)
    with db.transaction() as s:
        rated = service.rate_org_period(s, ORG, MARCH, clock.now())
        again = service.rate_org_period(s, ORG, MARCH, clock.now())
    assert rated == again
    # the finalized March is unchanged; re-rating it now adds only the late event's tokens
    assert [m[6:] for m in march if ".tokens" in m[3]] == [e[1:] for e in expected]
    rerated = [ln.tokens for ln in rated.invoice_lines() if ln.tokens is not None]
    assert rerated[0] == TokenCounts(4_500_000, 300_000, *OLD)
    assert rerated[1:] == [TokenCounts(*e[1:]) for e in expected[1:]]


def _token_line(tin: int, tout: int, prices: tuple[Decimal, Decimal], facts: list[str]) -> Line:
    amount = Money(_cents(tin, tout, *prices))
    return Line(
        "org", None, Sku("llama", TOKENS), Decimal(0), Decimal(0), amount, tuple(facts),
        TokenCounts(tin, tout, *prices),
    )  # fmt: skip


def test_adjustment_of_token_lines_is_pure() -> None:
    billed = [
        Billed("llama.tokens", None, Decimal(0), Decimal("0.35"), ("a",), 1_000_000, 250_000),
        Billed("llama.tokens", None, Decimal(0), Decimal("0.10"), ("b",), 1_000_000, 0),
    ]
    # late events on both prices: the counts add up, the prices differ (None)
    rerated = [
        _token_line(2_000_000, 250_000, OLD, ["a", "c"]),
        _token_line(3_000_000, 0, NEW, ["b", "d"]),
    ]
    (line,) = adjustment_lines(rerated, billed, "2026-03")
    assert (line.input_tokens, line.output_tokens) == (3_000_000, 0)
    assert (line.input_price_per_1m, line.output_price_per_1m) == (None, None)
    assert line.amount == Decimal("0.40")
    assert line.fact_ids == ("c", "d")
    assert adjustment_lines(rerated, billed, "2026-03") == [line]  # pure: same again

    # a late event on the old price only: priced as its line
    rerated[1] = _token_line(1_000_000, 0, NEW, ["b"])
    (line,) = adjustment_lines(rerated, billed, "2026-03")
    assert (line.input_tokens, line.output_tokens) == (1_000_000, 0)
    assert (line.input_price_per_1m, line.output_price_per_1m) == OLD

    # lines stored before invoices kept counts: the difference in tokens is not known
    legacy = [Billed(b.sku, b.project_id, b.gpu_seconds, b.amount, b.fact_ids) for b in billed]
    (line,) = adjustment_lines(rerated, legacy, "2026-03")
    assert (line.input_tokens, line.output_tokens) == (None, None)
    assert line.amount == Decimal("0.20")

    # GPU lines carry no token fields
    gpu = Line(
        "org", None, Sku("H100", "on_demand"), Decimal(3600), Decimal(2), Money(Decimal("2.00"))
    )
    (line,) = adjustment_lines([gpu], [], "2026-03")
    assert (line.input_tokens, line.input_price_per_1m) == (None, None)


def test_stored_prices_per_1m_have_the_columns_scale() -> None:
    # 0.123457 x (1 - 0.3) = 0.0864199 per 1M: stored (and shown) as 0.086420 on both backends
    price = Decimal("0.123457") * Decimal("0.7")
    line = _token_line(1_000_000, 0, (price, price), ["a"])
    (usage,) = usage_lines([line], "2026-03")
    assert usage.input_price_per_1m == usage.output_price_per_1m == Decimal("0.086420")
    (adj,) = adjustment_lines([line], [], "2026-03")
    assert (adj.input_tokens, adj.input_price_per_1m) == (1_000_000, Decimal("0.086420"))
