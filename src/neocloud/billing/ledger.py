"""What finalized invoices and credit notes already hold, read back: the usage and agreement
lines billed for a month, what each contract or credit grant has paid, and what credit notes
gave back. Reads only; invoices, agreement lines, credits and reports build on these."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.billing.adjustments import FACT_KINDS, AgreementKey, Billed
from neocloud.billing.kinds import InvoiceState, LineKind
from neocloud.billing.tables import CreditNoteRow, InvoiceLineRow, InvoiceRow


def _finalized_lines(
    org_id: str, usage_period: str, kinds: Sequence[LineKind]
) -> sa.Select[InvoiceLineRow]:
    return (
        sa.select(InvoiceLineRow)
        .join(InvoiceRow, InvoiceRow.id == InvoiceLineRow.invoice_id)
        .where(
            InvoiceRow.org_id == org_id,
            InvoiceRow.state == InvoiceState.FINALIZED,
            InvoiceLineRow.usage_period == usage_period,
            InvoiceLineRow.kind.in_(kinds),
        )
    )


def _credit_notes(org_id: str, usage_period: str) -> sa.Select[CreditNoteRow]:
    return sa.select(CreditNoteRow).where(
        CreditNoteRow.org_id == org_id, CreditNoteRow.usage_period == usage_period
    )


def billed_usage(s: Session, org_id: str, usage_period: str) -> list[Billed]:
    """What finalized invoices and credit notes already billed for ``usage_period``'s usage
    (its ``usage`` and ``adjustment`` lines)."""
    query = _finalized_lines(org_id, usage_period, [LineKind.USAGE, LineKind.ADJUSTMENT])
    out = [
        Billed(
            r.sku,
            r.project_id,
            r.gpu_seconds,
            r.amount,
            tuple(r.fact_ids),
            r.input_tokens,
            r.output_tokens,
        )
        for r in s.scalars(query)
    ]
    for note in s.scalars(_credit_notes(org_id, usage_period)):
        out += [
            Billed(
                ln["sku"],
                ln["project_id"],
                Decimal(ln["gpu_seconds"]),
                Decimal(ln["amount"]),
                tuple(ln["fact_ids"]),
                ln.get("input_tokens"),
                ln.get("output_tokens"),
            )
            for ln in note.lines
            if ln["kind"] == LineKind.ADJUSTMENT
        ]
    return out


def billed_agreements(
    s: Session, org_id: str, usage_period: str
) -> dict[AgreementKey, tuple[Decimal, Decimal]]:
    """(amount, GPU-seconds) billed so far per (kind, contract, SKU) of ``FACT_KINDS`` for a
    month: on finalized invoices and on credit notes."""
    out: dict[AgreementKey, tuple[Decimal, Decimal]] = {}

    def add(kind: str, ref: str | None, sku: str, amount: Decimal, secs: Decimal) -> None:
        key = (LineKind(kind), ref or "", sku)
        a, g = out.get(key, (Decimal(0), Decimal(0)))
        out[key] = (a + amount, g + secs)

    for r in s.scalars(_finalized_lines(org_id, usage_period, FACT_KINDS)):
        add(r.kind, r.reference_id, r.sku, r.amount, r.gpu_seconds)
    for note in s.scalars(_credit_notes(org_id, usage_period)):
        for ln in note.lines:
            if ln["kind"] in FACT_KINDS:
                add(
                    ln["kind"],
                    ln.get("reference_id"),
                    ln["sku"],
                    Decimal(ln["amount"]),
                    Decimal(ln["gpu_seconds"]),
                )
    return out


def drawn(
    s: Session, reference_ids: Sequence[str], kind: LineKind, org_id: str | None = None
) -> dict[str, Decimal]:
    """How much of each contract or grant finalized invoices already drew with ``kind`` lines
    (``drawdown``, ``credit``: the lines are negative), less what credit notes gave back to it
    (``restored`` lines)."""
    if not reference_ids:
        return {}
    back = restored(s, reference_ids, org_id)
    query = (
        sa.select(InvoiceLineRow.reference_id, sa.func.sum(InvoiceLineRow.amount))
        .join(InvoiceRow, InvoiceRow.id == InvoiceLineRow.invoice_id)
        .where(
            InvoiceRow.state == InvoiceState.FINALIZED,
            InvoiceLineRow.kind == kind,
            InvoiceLineRow.reference_id.in_(list(reference_ids)),
        )
        .group_by(InvoiceLineRow.reference_id)
    )
    used = {str(ref): -Decimal(total) for ref, total in s.execute(query)}
    return {ref: amount - back.get(ref, Decimal(0)) for ref, amount in used.items()}


def restored(
    s: Session, reference_ids: Sequence[str], org_id: str | None = None
) -> dict[str, Decimal]:
    """What credit notes put back on each grant or prepaid contract (their ``restored``
    lines), so that lowering an invoice paid by credit never turns that credit into cash."""
    query = sa.select(CreditNoteRow.lines)
    if org_id is not None:
        query = query.where(CreditNoteRow.org_id == org_id)
    wanted = set(reference_ids)
    out: dict[str, Decimal] = {}
    for lines in s.scalars(query):
        for ln in lines:
            ref = ln.get("reference_id")
            if ln.get("kind") == LineKind.RESTORED and ref in wanted:
                out[ref] = out.get(ref, Decimal(0)) + Decimal(ln["amount"])
    return out


def paid_by(s: Session, invoice_id: str) -> list[tuple[str, str | None, Decimal]]:
    """What paid an invoice: its credit and drawdown lines as (SKU, grant or contract id,
    amount), the amounts negative."""
    rows = s.execute(
        sa.select(InvoiceLineRow.sku, InvoiceLineRow.reference_id, InvoiceLineRow.amount).where(
            InvoiceLineRow.invoice_id == invoice_id,
            InvoiceLineRow.kind.in_([LineKind.CREDIT, LineKind.DRAWDOWN]),
        )
    ).all()
    return [(sku, ref, Decimal(amount)) for sku, ref, amount in rows]


def given_back(s: Session, invoice_id: str) -> dict[str, Decimal]:
    """What earlier credit notes on an invoice gave back, per grant or contract id."""
    given: dict[str, Decimal] = {}
    query = sa.select(CreditNoteRow).where(CreditNoteRow.invoice_id == invoice_id)
    for note in s.scalars(query):
        for ln in note.lines:
            if ln["kind"] == LineKind.RESTORED:
                ref = ln["reference_id"]
                given[ref] = given.get(ref, Decimal(0)) + Decimal(ln["amount"])
    return given
