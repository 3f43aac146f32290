"""CLI for billing: ``neocloud billing catalog|invoice|price-book|publish|close``,
``neocloud billing contracts create|list|get``, ``neocloud billing credits grant|list``,
``neocloud usage send``, ``neocloud invoices preview|create|finalize|get|list|credit-notes``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from neocloud.cli.output import (
    Column,
    api_call,
    err,
    money,
    out,
    print_json,
    print_object,
    print_table,
    when,
)
from neocloud.cli.state import ORG_HELP, STATE

billing_app = typer.Typer(
    help="Billing: price books, the SkyPilot catalog, invoices.", no_args_is_help=True
)
usage_app = typer.Typer(help="Usage events (tokens, storage, …).", no_args_is_help=True)
invoices_app = typer.Typer(help="Invoices: previews rated from the facts.", no_args_is_help=True)
contracts_app = typer.Typer(
    help="Contracts: committed spend or capacity, prepaid, reservation charges, backstops.",
    no_args_is_help=True,
)
credits_app = typer.Typer(help="Credit grants (paid or promotional).", no_args_is_help=True)
billing_app.add_typer(contracts_app, name="contracts")
billing_app.add_typer(credits_app, name="credits")

Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON")]
Csv = Annotated[bool, typer.Option("--csv", help="Print CSV, one row per line")]
Org = Annotated[str | None, typer.Option("--org", help=ORG_HELP)]
PeriodOpt = Annotated[str, typer.Option("--period", help="Month, YYYY-MM")]

LINE_COLUMNS: list[Column] = [
    ("SKU", "sku"),
    ("PROJECT", "project_id"),
    ("GPU-HOURS", "gpu_hours"),
    ("UNIT PRICE/H", "unit_price"),
    ("AMOUNT", "amount"),
    ("FACTS", lambda ln: len(ln["fact_ids"])),
]


def _tokens(ln: dict[str, Any]) -> str | None:
    """``1000000 in / 250 out`` on a token line; None (``-``) on others."""
    if ln.get("input_tokens") is None and ln.get("output_tokens") is None:
        return None
    return f"{_or_dash(ln.get('input_tokens'))} in / {_or_dash(ln.get('output_tokens'))} out"


def _per_1m(ln: dict[str, Any]) -> str | None:
    """``0.15 / 0.60 USD`` (input / output per 1M tokens) on a token line."""
    p_in, p_out = ln.get("input_price_per_1m"), ln.get("output_price_per_1m")
    if p_in is None and p_out is None:
        return None
    prices = [p for p in (p_in, p_out) if p is not None]
    amounts = [p["amount"] if p else "-" for p in (p_in, p_out)]
    return f"{amounts[0]} / {amounts[1]} {prices[0]['currency']}"


def _or_dash(value: Any) -> str:
    return "-" if value is None else str(value)


TOKEN_COLUMNS: list[Column] = [
    ("MODEL", "model"),
    ("BATCH", lambda ln: "yes" if ln["batch"] else "no"),
    ("TOKENS", _tokens),
    ("IN / OUT PER 1M", _per_1m),
    ("AMOUNT", "amount"),
    ("FACTS", lambda ln: len(ln["fact_ids"])),
]

AGREEMENT_COLUMNS: list[Column] = [
    ("KIND", "kind"),
    ("SKU", "sku"),
    ("CONTRACT/GRANT", "reference_id"),
    ("AMOUNT", "amount"),
]
Limit = Annotated[int | None, typer.Option("--limit", help="Page size")]
Note = Annotated[str | None, typer.Option("--note", help="A note kept with it")]
InvoiceId = Annotated[str, typer.Argument(help="Invoice id (inv_…)")]
After = Annotated[str | None, typer.Option("--after", help="next_cursor of the previous page")]


@billing_app.command("catalog")
@api_call
def catalog(
    format: Annotated[str, typer.Option("--format", help="Catalog format")] = "skypilot",
) -> None:
    """The offer as a catalog CSV; ``skypilot`` is SkyPilot's catalog format."""
    sys.stdout.write(STATE.client().price_books.catalog(format=format))


ThisMonth = Annotated[
    str | None, typer.Option("--period", help="Month, YYYY-MM (default: this month, UTC)")
]


def _invoice(org: str | None, period: str | None, as_json: bool, as_csv: bool) -> None:
    org = STATE.org_id(org)
    period = period or STATE.clock.now().strftime("%Y-%m")
    client = STATE.client()
    if as_csv:
        sys.stdout.write(client.invoices.preview_csv(org, period))
        return
    preview: dict[str, Any] = client.invoices.preview(org, period)
    if as_json:
        print_json(preview)
        return
    title = f"{preview['org_id']} · {preview['period']} · as of {when(preview['as_of'])}"
    print_table(preview["lines"], LINE_COLUMNS, title=title)
    if preview.get("token_lines"):
        print_table(preview["token_lines"], TOKEN_COLUMNS, title="tokens")
    if preview.get("agreement_lines"):
        print_table(preview["agreement_lines"], AGREEMENT_COLUMNS, title="contracts and credits")
    out.print(f"TOTAL  {money(preview['total'])}  (price book {preview['price_book_id']})")


# The same command as `invoices preview`, kept (hidden) for scripts that call it.
@billing_app.command("invoice", hidden=True)
@api_call
def invoice(
    period: ThisMonth = None, org: Org = None, as_json: Json = False, as_csv: Csv = False
) -> None:
    """The org's invoice for a month, rated from the facts now (same as `invoices preview`)."""
    _invoice(org, period, as_json, as_csv)


@invoices_app.command("preview")
@api_call
def preview(
    period: ThisMonth = None, org: Org = None, as_json: Json = False, as_csv: Csv = False
) -> None:
    """The org's invoice for a month, rated from the facts now (a preview until it is final)."""
    _invoice(org, period, as_json, as_csv)


STORED_COLUMNS: list[Column] = [
    ("KIND", "kind"),
    ("FOR", "usage_period"),
    ("SKU", "sku"),
    ("PROJECT", "project_id"),
    ("GPU-SECONDS", "gpu_seconds"),
    ("UNIT PRICE/H", "unit_price"),
    ("TOKENS", _tokens),
    ("IN / OUT PER 1M", _per_1m),
    ("AMOUNT", "amount"),
    ("FACTS", lambda ln: len(ln["fact_ids"])),
]


def _show_invoice(inv: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(inv)
        return
    title = f"{inv['id']} · {inv['org_id']} · {inv['period']} · {inv['state']}"
    print_table(inv.get("lines") or [], STORED_COLUMNS, title=title)
    out.print(f"TOTAL  {money(inv['total'])}")


@invoices_app.command("create")
@api_call
def invoice_create(period: PeriodOpt, org: Org = None, as_json: Json = False) -> None:
    """Create or refresh the org's draft for a month from the facts (operator admins)."""
    _show_invoice(STATE.client().invoices.build(STATE.org_id(org), period), as_json)


@invoices_app.command("finalize")
@api_call
def invoice_finalize(invoice_id: InvoiceId, as_json: Json = False) -> None:
    """Freeze an invoice after its month and grace period (operator admins); idempotent."""
    _show_invoice(STATE.client().invoices.finalize(invoice_id), as_json)


@invoices_app.command("get")
@api_call
def invoice_get(invoice_id: InvoiceId, as_json: Json = False, as_csv: Csv = False) -> None:
    """An invoice with its lines."""
    client = STATE.client()
    if as_csv:
        sys.stdout.write(client.invoices.csv(invoice_id))
        return
    _show_invoice(client.invoices.get(invoice_id), as_json)


@invoices_app.command("list")
@api_call
def invoice_list(
    org: Org = None, limit: Limit = None, after: After = None, as_json: Json = False
) -> None:
    """The org's invoices, oldest first, a page at a time."""
    page = STATE.client().invoices.list(STATE.org_id(org), limit=limit, after=after)
    if as_json:
        print_json(page)
        return
    columns: list[Column] = [
        ("ID", "id"),
        ("PERIOD", "period"),
        ("STATE", "state"),
        ("TOTAL", "total"),
    ]
    print_table(page["data"], columns)
    _more(page)


def _more(page: dict[str, Any]) -> None:
    if page.get("next_cursor"):
        out.print(f"more: --after {page['next_cursor']}")


@invoices_app.command("credit-notes")
@api_call
def credit_notes(
    org: Org = None, limit: Limit = None, after: After = None, as_json: Json = False
) -> None:
    """Credit notes: money given back on finalized invoices that late facts lowered."""
    page = STATE.client().invoices.credit_notes(STATE.org_id(org), limit=limit, after=after)
    if as_json:
        print_json(page)
        return
    columns: list[Column] = [
        ("ID", "id"),
        ("INVOICE", "invoice_id"),
        ("FOR", "usage_period"),
        ("TOTAL", "total"),
    ]
    print_table(page["data"], columns)
    _more(page)


@billing_app.command("close")
@api_call
def close(
    period: Annotated[
        str | None, typer.Option("--period", help="Month, YYYY-MM (default: last month)")
    ] = None,
    as_json: Json = False,
) -> None:
    """The monthly invoicing run (operator admins): a draft for every org with something to
    bill, finalized once the grace period is over; running it again bills nothing twice."""
    result = STATE.client().invoices.close(period)
    if as_json:
        print_json(result)
        return
    out.print(
        f"{result['period']}: {len(result['finalized'])} finalized, "
        f"{len(result['drafts'])} draft(s) in their grace period, "
        f"{len(result['unchanged'])} already final"
    )


CONTRACT_FIELDS: list[Column] = [
    ("ID", "id"),
    ("ORG", "org_id"),
    ("KIND", "kind"),
    ("START", "start_at"),
    ("END", "end_at"),
]


@contracts_app.command("create")
@api_call
def contract_create(
    kind: Annotated[
        str,
        typer.Option(
            "--kind", help="commit_spend | commit_capacity | prepaid | reservation | backstop"
        ),
    ],
    org: Org = None,
    start: Annotated[str | None, typer.Option("--start", help="RFC 3339 time")] = None,
    end: Annotated[str | None, typer.Option("--end", help="RFC 3339 time")] = None,
    amount: Annotated[
        str | None, typer.Option("--amount", help="commit_spend per month; prepaid total")
    ] = None,
    gpus: Annotated[
        int | None, typer.Option("--gpus", help="commit_capacity, backstop: GPUs committed")
    ] = None,
    rate: Annotated[str | None, typer.Option("--rate", help="Per GPU-hour")] = None,
    gpu_model: Annotated[
        str | None, typer.Option("--gpu-model", help="The GPU model committed (H100, …)")
    ] = None,
    reservation: Annotated[str | None, typer.Option("--reservation", help="rsv_…")] = None,
    term: Annotated[
        Literal["1m", "1y"] | None, typer.Option("--term", help="A month or a year")
    ] = None,
    billing: Annotated[
        Literal["upfront", "monthly"] | None, typer.Option("--billing", help="When it is billed")
    ] = None,
    counterparty: Annotated[
        str | None, typer.Option("--counterparty", help="Backstop: who takes the capacity")
    ] = None,
    note: Note = None,
    as_json: Json = False,
) -> None:
    """Record a contract for an org (operator admins)."""
    row = STATE.client().contracts.create(
        STATE.org_id(org),
        kind,
        start_at=start,
        end_at=end,
        amount=amount,
        gpus=gpus,
        rate=rate,
        gpu_model=gpu_model,
        reservation_id=reservation,
        term=term,
        billing=billing,
        counterparty=counterparty,
        note=note,
    )
    print_object(row, as_json=as_json)


@contracts_app.command("get")
@api_call
def contract_get(
    contract_id: Annotated[str, typer.Argument(help="Contract id (ctr_…)")], as_json: Json = False
) -> None:
    """A contract with every term: kind, window, amount, GPUs, rate, billing."""
    print_object(STATE.client().contracts.get(contract_id), as_json=as_json)


@contracts_app.command("list")
@api_call
def contract_list(
    org: Org = None, limit: Limit = None, after: After = None, as_json: Json = False
) -> None:
    """The org's contracts, oldest first, a page at a time."""
    page = STATE.client().contracts.list(STATE.org_id(org), limit=limit, after=after)
    if as_json:
        print_json(page)
        return
    print_table(page["data"], [*CONTRACT_FIELDS, ("AMOUNT", "amount")])
    _more(page)


@credits_app.command("grant")
@api_call
def credit_grant(
    amount: Annotated[str, typer.Option("--amount", help="How much credit, in the currency")],
    org: Org = None,
    priority: Annotated[int, typer.Option("--priority", help="Lower is used first")] = 0,
    expires: Annotated[str | None, typer.Option("--expires", help="RFC 3339 time")] = None,
    paid: Annotated[bool, typer.Option("--paid", help="Bought credit (refundable)")] = False,
    note: Note = None,
    as_json: Json = False,
) -> None:
    """Grant credit to an org (operator admins)."""
    row = STATE.client().credits.grant(
        STATE.org_id(org), amount, priority=priority, expires_at=expires, paid=paid, note=note
    )
    print_object(row, as_json=as_json)


@credits_app.command("list")
@api_call
def credit_list(
    org: Org = None, limit: Limit = None, after: After = None, as_json: Json = False
) -> None:
    """The org's grants with the balance left of each."""
    page = STATE.client().credits.list(STATE.org_id(org), limit=limit, after=after)
    if as_json:
        print_json(page)
        return
    columns: list[Column] = [
        ("ID", "id"),
        ("PRIORITY", "priority"),
        ("EXPIRES", "expires_at"),
        ("PAID", "paid"),
        ("AMOUNT", "amount"),
        ("BALANCE", "balance"),
    ]
    print_table(page["data"], columns)
    _more(page)


@billing_app.command("price-book")
@api_call
def price_book(as_json: Json = False) -> None:
    """The price book in force now."""
    book = STATE.client().price_books.current()
    if as_json:
        print_json(book)
        return
    print_object(book, as_json=False, fields=[("ID", "id"), ("EFFECTIVE", "effective_from")])
    rows = [{"sku": k, "price": v} for k, v in sorted(book["gpu_prices"].items())]
    columns: list[Column] = [
        ("SKU", "sku"),
        ("PER GPU-HOUR", lambda r: money(r["price"], book["currency"])),
    ]
    print_table(rows, columns)


@billing_app.command("publish")
@api_call
def publish(
    effective_from: Annotated[str, typer.Option("--effective-from", help="RFC 3339 time")],
    price: Annotated[
        list[str] | None, typer.Option("--price", help="SKU=PRICE per GPU-hour; repeat")
    ] = None,
    note: Note = None,
    as_json: Json = False,
) -> None:
    """Publish a new price book version (operator admins); unlisted SKUs keep their default."""
    prices = {}
    for item in price or []:
        sku, sep, value = item.partition("=")
        if not sep:
            err.print(f"--price takes SKU=PRICE, not {item!r}")
            raise typer.Exit(2)
        prices[sku.strip()] = value.strip()
    book = STATE.client().price_books.publish(effective_from, gpu_prices=prices, note=note)
    print_object(book, as_json=as_json, fields=[("ID", "id"), ("EFFECTIVE", "effective_from")])


@usage_app.command("send")
@api_call
def send(
    path: Annotated[Path, typer.Argument(help="JSON file: a list of events, or - for stdin")],
    org: Annotated[
        str | None, typer.Option("--org", help="Operator admins: for this org (id, slug or name)")
    ] = None,
    as_json: Json = False,
) -> None:
    """Send usage events ({"id", "source", "type", "subject", "time", "data"}); replays count
    once."""
    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    events = json.loads(text)
    result = STATE.client().usage.send(events, org_id=STATE.maybe_org_id(org))
    print_object(
        result, as_json=as_json, fields=[("ACCEPTED", "accepted"), ("DUPLICATES", "duplicates")]
    )


APPS: dict[str, typer.Typer] = {
    "billing": billing_app,
    "usage": usage_app,
    "invoices": invoices_app,
}


# -- operator revenue reports -------------------------------------------------------------------

report_app = typer.Typer(
    help="Operator revenue reports: revenue, backlog, customer concentration.",
    no_args_is_help=True,
)
billing_app.add_typer(report_app, name="report")
AMOUNT_COLUMNS: list[Column] = [("", "key"), ("AMOUNT", "amount")]


def _named(row: dict[str, Any]) -> str:
    return f"{row['name']} ({row['key']})" if row.get("name") else str(row["key"])


@report_app.command("revenue")
@api_call
def report_revenue(
    start: Annotated[str, typer.Option("--from", help="First month, YYYY-MM")],
    end: Annotated[str, typer.Option("--to", help="Last month, YYYY-MM (inclusive)")],
    as_json: Json = False,
) -> None:
    """Revenue by org, SKU, class and month, re-rated from the facts (operators)."""
    report: dict[str, Any] = STATE.client().billing_reports.revenue(start, end)
    if as_json:
        print_json(report)
        return
    out.print(f"revenue {report['start']} to {report['end']} (as of {when(report['as_of'])})")
    for key, title in (
        ("by_month", "MONTH"),
        ("by_org", "ORG"),
        ("by_class", "CLASS"),
        ("by_sku", "SKU"),
    ):
        columns: list[Column] = [(title, _named), AMOUNT_COLUMNS[1]]
        print_table(report[key], columns)
    out.print(f"TOTAL  {money(report['total'])}")


@report_app.command("backlog")
@api_call
def report_backlog(as_json: Json = False) -> None:
    """Remaining contracted value per org (operators)."""
    report: dict[str, Any] = STATE.client().billing_reports.backlog()
    if as_json:
        print_json(report)
        return
    columns: list[Column] = [("ORG", _named), ("BACKLOG", AMOUNT_COLUMNS[1][1])]
    out.print(f"backlog at {when(report['at'])}")
    print_table(report["by_org"], columns)
    out.print(f"TOTAL  {money(report['total'])}")


@report_app.command("concentration")
@api_call
def report_concentration(
    window_days: Annotated[int, typer.Option("--window-days", help="Trailing window")] = 90,
    as_json: Json = False,
) -> None:
    """Customers' shares of revenue over a trailing window: top-1, top-2, HHI (operators)."""
    report: dict[str, Any] = STATE.client().billing_reports.concentration(window_days=window_days)
    if as_json:
        print_json(report)
        return
    columns: list[Column] = [
        ("ORG", lambda r: _named({"key": r["org_id"], "name": r.get("name")})),
        ("REVENUE", "revenue"),
        ("SHARE", "share"),
    ]
    out.print(f"revenue from {when(report['window_start'])} to {when(report['window_end'])}")
    print_table(report["customers"], columns)
    out.print(
        f"TOTAL  {money(report['total'])}  top-1 {report['top1']}  "
        f"top-2 {report['top2']}  HHI {report['hhi']}"
    )
