"""CSV exports of invoices and invoice previews: one row per line, the same SKU codes and token
columns in both, so a spreadsheet built on the preview keeps working on the stored invoice."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from neocloud.billing.schemas import InvoiceOut, InvoicePreviewOut
from neocloud.web.schemas import MoneyOut

_TOKEN_COLUMNS = ("input_tokens", "output_tokens", "input_price_per_1m", "output_price_per_1m")
_NO_TOKENS = ("",) * len(_TOKEN_COLUMNS)


def preview_csv(out: InvoicePreviewOut) -> str:
    """GPU lines, token lines (``gpu_hours`` says ``N in / M out``), then agreement charges
    (SKU ``KIND.SKU``, the contract or grant first among the facts)."""
    header = ("sku", "project_id", "gpu_seconds", "gpu_hours", "unit_price", "amount", "currency")
    rows: list[Iterable[object]] = [(*header, "fact_ids", *_TOKEN_COLUMNS)]
    for ln in out.lines:
        money = (ln.unit_price.amount, ln.amount.amount, ln.amount.currency)
        where = (ln.sku, ln.project_id or "", ln.gpu_seconds, ln.gpu_hours)
        rows.append((*where, *money, " ".join(ln.fact_ids), *_NO_TOKENS))
    for tl in out.token_lines:
        counts = f"{tl.input_tokens} in / {tl.output_tokens} out"
        money = (tl.amount.amount, tl.amount.currency, " ".join(tl.fact_ids))
        prices = (_amount(tl.input_price_per_1m), _amount(tl.output_price_per_1m))
        tokens = (tl.input_tokens, tl.output_tokens, *prices)
        rows.append((tl.sku, "", "", counts, "", *money, *tokens))
    for ch in out.agreement_lines:
        facts = " ".join([ch.reference_id, *ch.fact_ids])
        money = (ch.unit_price.amount, ch.amount.amount, ch.amount.currency)
        rows.append((f"{ch.kind}.{ch.sku}", "", ch.gpu_seconds, "", *money, facts, *_NO_TOKENS))
    return _csv(rows)


def invoice_csv(out: InvoiceOut) -> str:
    """A stored invoice's lines with the facts each prices."""
    header = ("invoice_id", "period", "kind", "usage_period", "sku", "project_id", "gpu_seconds")
    rows: list[Iterable[object]] = [
        (*header, "unit_price", "amount", "currency", *_TOKEN_COLUMNS, "fact_ids", "reference_id")
    ]
    for ln in out.lines or []:
        where = (out.id, out.period, ln.kind, ln.usage_period, ln.sku, ln.project_id or "")
        money = (ln.unit_price.amount, ln.amount.amount, ln.amount.currency)
        tokens = (
            _blank(ln.input_tokens),
            _blank(ln.output_tokens),
            _amount(ln.input_price_per_1m),
            _amount(ln.output_price_per_1m),
        )
        facts = (" ".join(ln.fact_ids), ln.reference_id or "")
        rows.append((*where, ln.gpu_seconds, *money, *tokens, *facts))
    return _csv(rows)


def _csv(rows: Iterable[Iterable[object]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _blank(value: int | None) -> str:
    return "" if value is None else str(value)


def _amount(money: MoneyOut | None) -> str:
    return "" if money is None else str(money.amount)
