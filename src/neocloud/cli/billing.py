"""CLI for billing: ``neocloud billing catalog|invoice|price-book|publish``,
``neocloud usage send``, ``neocloud invoices preview``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from neocloud.cli.output import Column, api_call, err, out, print_json, print_object, print_table
from neocloud.cli.state import STATE

billing_app = typer.Typer(
    help="Billing: price books, the SkyPilot catalog, invoices.", no_args_is_help=True
)
usage_app = typer.Typer(help="Usage events (tokens, storage, …).", no_args_is_help=True)
invoices_app = typer.Typer(help="Invoices: previews rated from the facts.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON")]
Csv = Annotated[bool, typer.Option("--csv", help="Print CSV, one row per line")]
Org = Annotated[str, typer.Option("--org", help="Organization id (org_…)")]
PeriodOpt = Annotated[str, typer.Option("--period", help="Month, YYYY-MM")]

LINE_COLUMNS: list[Column] = [
    ("SKU", "sku"),
    ("PROJECT", "project_id"),
    ("GPU-HOURS", "gpu_hours"),
    ("UNIT PRICE/H", "unit_price"),
    ("AMOUNT", "amount"),
    ("FACTS", lambda ln: len(ln["fact_ids"])),
]


@billing_app.command("catalog")
@api_call
def catalog(
    format: Annotated[str, typer.Option("--format", help="Catalog format")] = "skypilot",
) -> None:
    """The offer as a catalog CSV; ``skypilot`` is SkyPilot's catalog format."""
    sys.stdout.write(STATE.client().price_books.catalog(format=format))


def _invoice(org: str, period: str, as_json: bool, as_csv: bool) -> None:
    client = STATE.client()
    if as_csv:
        sys.stdout.write(client.invoices.preview_csv(org, period))
        return
    preview: dict[str, Any] = client.invoices.preview(org, period)
    if as_json:
        print_json(preview)
        return
    title = f"{preview['org_id']} · {preview['period']} · as of {preview['as_of']}"
    print_table(preview["lines"], LINE_COLUMNS, title=title)
    total = preview["total"]
    out.print(
        f"TOTAL  {total['amount']} {total['currency']}  (price book {preview['price_book_id']})"
    )


@billing_app.command("invoice")
@api_call
def invoice(org: Org, period: PeriodOpt, as_json: Json = False, as_csv: Csv = False) -> None:
    """The org's invoice for a month, rated from the facts now (a preview until it is final)."""
    _invoice(org, period, as_json, as_csv)


@invoices_app.command("preview")
@api_call
def preview(org: Org, period: PeriodOpt, as_json: Json = False, as_csv: Csv = False) -> None:
    """Rate the org's facts for a month now."""
    _invoice(org, period, as_json, as_csv)


STORED_COLUMNS: list[Column] = [
    ("KIND", "kind"),
    ("FOR", "usage_period"),
    ("SKU", "sku"),
    ("PROJECT", "project_id"),
    ("GPU-SECONDS", "gpu_seconds"),
    ("UNIT PRICE/H", "unit_price"),
    ("AMOUNT", "amount"),
    ("FACTS", lambda ln: len(ln["fact_ids"])),
]


def _show_invoice(inv: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(inv)
        return
    title = f"{inv['id']} · {inv['org_id']} · {inv['period']} · {inv['state']}"
    print_table(inv.get("lines") or [], STORED_COLUMNS, title=title)
    total = inv["total"]
    out.print(f"TOTAL  {total['amount']} {total['currency']}")


@invoices_app.command("create")
@api_call
def invoice_create(org: Org, period: PeriodOpt, as_json: Json = False) -> None:
    """Create or refresh the org's draft for a month from the facts (operator admins)."""
    _show_invoice(STATE.client().invoices.build(org, period), as_json)


@invoices_app.command("finalize")
@api_call
def invoice_finalize(invoice_id: str, as_json: Json = False) -> None:
    """Freeze an invoice after its month and grace period (operator admins); idempotent."""
    _show_invoice(STATE.client().invoices.finalize(invoice_id), as_json)


@invoices_app.command("get")
@api_call
def invoice_get(invoice_id: str, as_json: Json = False, as_csv: Csv = False) -> None:
    """An invoice with its lines."""
    client = STATE.client()
    if as_csv:
        sys.stdout.write(client.invoices.csv(invoice_id))
        return
    _show_invoice(client.invoices.get(invoice_id), as_json)


@invoices_app.command("list")
@api_call
def invoice_list(org: Org, as_json: Json = False) -> None:
    """The org's invoices by month."""
    page = STATE.client().invoices.list(org)
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
    print_table(rows, [("SKU", "sku"), (f"PER GPU-HOUR ({book['currency']})", "price")])


@billing_app.command("publish")
@api_call
def publish(
    effective_from: Annotated[str, typer.Option("--effective-from", help="RFC 3339 time")],
    price: Annotated[
        list[str] | None, typer.Option("--price", help="SKU=PRICE per GPU-hour; repeat")
    ] = None,
    note: Annotated[str | None, typer.Option("--note")] = None,
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
    org: Annotated[str | None, typer.Option("--org", help="Operator admins: for this org")] = None,
    as_json: Json = False,
) -> None:
    """Send usage events ({"id", "source", "type", "subject", "time", "data"}); replays count
    once."""
    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    events = json.loads(text)
    result = STATE.client().usage.send(events, org_id=org)
    print_object(
        result, as_json=as_json, fields=[("ACCEPTED", "accepted"), ("DUPLICATES", "duplicates")]
    )


APPS: dict[str, typer.Typer] = {
    "billing": billing_app,
    "usage": usage_app,
    "invoices": invoices_app,
}
