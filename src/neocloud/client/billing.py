"""SDK resources for billing: ``client.price_books``, ``client.usage``, ``client.invoices``,
``client.contracts``, ``client.credits``."""

from __future__ import annotations

from typing import Any

from neocloud.client.resources import Resource

Obj = dict[str, Any]


class PriceBooksResource(Resource):
    def publish(
        self,
        effective_from: str,
        *,
        gpu_prices: dict[str, str] | None = None,
        token_prices: dict[str, Obj] | None = None,
        currency: str = "USD",
        note: str | None = None,
    ) -> Obj:
        """Publish a price book version (operator admins); prices are decimal strings."""
        body = {
            "effective_from": effective_from,
            "gpu_prices": gpu_prices or {},
            "token_prices": token_prices or {},
            "currency": currency,
            "note": note,
        }
        result: Obj = self._c.post("price-books", body)
        return result

    def current(self) -> Obj:
        result: Obj = self._c.get("price-books/current")
        return result

    def catalog(self, *, format: str = "skypilot") -> str:
        """The current offer as a catalog CSV (``skypilot``: SkyPilot's catalog format)."""
        return self._c.get_text("price-books/current/catalog", format=format)


class UsageResource(Resource):
    def send(self, events: list[Obj], *, org_id: str | None = None) -> Obj:
        """Send a batch of ``{"id", "source", "type", "subject", "time", "data"}`` events;
        returns ``{"accepted", "duplicates"}``."""
        path = "usage/events" if org_id is None else f"usage/events?org_id={org_id}"
        result: Obj = self._c.post(path, {"events": events})
        return result


class InvoicesResource(Resource):
    def preview(self, org_id: str, period: str) -> Obj:
        """The org's invoice for ``period`` (YYYY-MM) rated from the facts now."""
        result: Obj = self._c.get("invoices/preview", org_id=org_id, period=period)
        return result

    def build(self, org_id: str, period: str) -> Obj:
        """Create or refresh the org's draft for ``period`` (operator admins)."""
        result: Obj = self._c.post("invoices", {"org_id": org_id, "period": period})
        return result

    def finalize(self, invoice_id: str) -> Obj:
        result: Obj = self._c.post(f"invoices/{invoice_id}/finalize")
        return result

    def get(self, invoice_id: str) -> Obj:
        result: Obj = self._c.get(f"invoices/{invoice_id}")
        return result

    def list(self, org_id: str, *, limit: int | None = None, after: str | None = None) -> Obj:
        """A page of the org's invoices (``next_cursor`` goes in ``after``)."""
        params = {k: v for k, v in (("limit", limit), ("after", after)) if v is not None}
        result: Obj = self._c.get("invoices", org_id=org_id, **params)
        return result

    def close(self, period: str | None = None) -> Obj:
        """The monthly invoicing run (operator admins): drafts for ``period`` (default last
        month), finalized once the grace period is over; safe to run again."""
        result: Obj = self._c.post("invoices/close", {"period": period})
        return result

    def credit_notes(
        self, org_id: str, *, limit: int | None = None, after: str | None = None
    ) -> Obj:
        params = {k: v for k, v in (("limit", limit), ("after", after)) if v is not None}
        result: Obj = self._c.get("credit-notes", org_id=org_id, **params)
        return result

    def csv(self, invoice_id: str) -> str:
        return self._c.get_text(f"invoices/{invoice_id}", format="csv")

    def preview_csv(self, org_id: str, period: str) -> str:
        """The same preview as CSV: one row per line, with the facts it prices."""
        return self._c.get_text("invoices/preview", org_id=org_id, period=period, format="csv")


class ContractsResource(Resource):
    def create(self, org_id: str, kind: str, **fields: Any) -> Obj:
        """Record a contract (operator admins): ``kind`` is commit_spend, commit_capacity,
        prepaid, reservation or backstop; money and rates are decimal strings, times RFC 3339
        (``start_at``, ``end_at``, ``amount``, ``gpus``, ``rate``, ``gpu_model``,
        ``reservation_id``, ``term``, ``billing``, ``counterparty``, ``note``)."""
        body = {
            "org_id": org_id,
            "kind": kind,
            **{k: v for k, v in fields.items() if v is not None},
        }
        result: Obj = self._c.post("contracts", body)
        return result

    def get(self, contract_id: str) -> Obj:
        result: Obj = self._c.get(f"contracts/{contract_id}")
        return result

    def list(self, org_id: str, *, limit: int | None = None, after: str | None = None) -> Obj:
        params = {k: v for k, v in (("limit", limit), ("after", after)) if v is not None}
        result: Obj = self._c.get("contracts", org_id=org_id, **params)
        return result


class CreditsResource(Resource):
    def grant(
        self,
        org_id: str,
        amount: str,
        *,
        priority: int = 0,
        expires_at: str | None = None,
        paid: bool = False,
        note: str | None = None,
    ) -> Obj:
        """Grant credit (operator admins); used by priority, then earliest expiry."""
        body = {
            "org_id": org_id,
            "amount": amount,
            "priority": priority,
            "expires_at": expires_at,
            "paid": paid,
            "note": note,
        }
        result: Obj = self._c.post("credits", body)
        return result

    def list(self, org_id: str, *, limit: int | None = None, after: str | None = None) -> Obj:
        """The org's grants, each with its ``balance`` left."""
        params = {k: v for k, v in (("limit", limit), ("after", after)) if v is not None}
        result: Obj = self._c.get("credits", org_id=org_id, **params)
        return result


class BillingReportsResource(Resource):
    """Operator revenue reports: ``client.billing_reports``."""

    def revenue(self, start: str, end: str) -> Obj:
        """Revenue by org, SKU, class and month from ``start`` to ``end`` (YYYY-MM)."""
        result: Obj = self._c.get("billing/reports/revenue", **{"from": start, "to": end})
        return result

    def backlog(self) -> Obj:
        result: Obj = self._c.get("billing/reports/backlog")
        return result

    def concentration(self, *, window_days: int = 90) -> Obj:
        result: Obj = self._c.get("billing/reports/concentration", window_days=window_days)
        return result
