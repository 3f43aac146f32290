"""Live mode reads billing (both backends): tenants run instances through compute and send
Studio token usage; the live report's revenue, realized price and concentration are the ones
billing rates, re-derived here from the allocation rows themselves."""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
import sqlalchemy as sa
import typer
from typer.testing import CliRunner

from neocloud.cli import output
from neocloud.cli.econ import econ_app
from neocloud.cli.state import STATE
from neocloud.client import Client
from neocloud.compute.tables import AllocationRow
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database
from neocloud.drivers.sim import SimDriver
from neocloud.kernel.clock import VirtualClock
from neocloud.tenancy.tables import OrgRow

from .helpers import FLEET, tenant_client

PRICE = Decimal("3.00")
TOKENS = Decimal("50.00")  # 100M input at $0.20 + 50M output at $0.60 per 1M


def _expected_revenue(db: Database, clock: VirtualClock, days: int) -> dict[str, Decimal]:
    """Independently: each org's GPU-hours in the window from its allocation rows x $3.00,
    rounded once per org (one line per org and SKU), plus globex's tokens."""
    now = clock.now()
    lo = now - timedelta(days=days)
    with db.transaction() as s:
        rows = s.execute(
            sa.select(
                OrgRow.slug, AllocationRow.gpu_count, AllocationRow.start_at, AllocationRow.end_at
            ).join(OrgRow, OrgRow.id == AllocationRow.org_id)
        ).all()
    hours: dict[str, Decimal] = {}
    for slug, gpus, start, end in rows:
        a, b = max(start, lo), min(end or now, now)
        if b > a:
            secs = Decimal((b - a) // timedelta(microseconds=1)) / Decimal(1_000_000)
            hours[slug] = hours.get(slug, Decimal(0)) + gpus * secs / 3600
    out = {k: (h * PRICE).quantize(Decimal("0.01"), ROUND_HALF_UP) for k, h in hours.items()}
    out["globex"] = out.get("globex", Decimal(0)) + TOKENS
    return out


def _platform(
    admin: Client, db: Database, clock: VirtualClock, *, operator_gpus: int = 0
) -> Client:
    """A fleet of 32 H100s with capex; acme runs 16 GPUs and globex 8 for 10 days; globex also
    sends $50 of Studio token usage; the operator's own org runs ``operator_gpus`` (tests)."""
    admin.fleet.import_spec(FLEET)  # type: ignore[attr-defined]
    admin.price_books.publish(  # type: ignore[attr-defined]
        clock.now().isoformat(),
        gpu_prices={"H100-SXM-80GB.on_demand": str(PRICE)},
        token_prices={"llama": {"input_per_1m": "0.20", "output_per_1m": "0.60"}},
    )
    acme = tenant_client(admin, "acme", h100_quota=64)
    globex = tenant_client(admin, "globex", h100_quota=64)
    acme.instances.create("8xH100", name="a1")  # type: ignore[attr-defined]
    acme.instances.create("8xH100", name="a2")  # type: ignore[attr-defined]
    globex.instances.create("8xH100", name="g1")  # type: ignore[attr-defined]
    if operator_gpus:
        own_org = admin.get("me")["org_id"]
        admin.quotas.set(own_org, "H100-SXM-80GB", operator_gpus)  # type: ignore[attr-defined]
        admin.instances.create(f"{operator_gpus}xH100", name="smoke-test")  # type: ignore[attr-defined]
    Worker(db, clock, driver=SimDriver(seed=1), holder="test").run_once()
    clock.advance(timedelta(days=10))
    event = {
        "id": "req-1",
        "source": "studio",
        "type": "tokens",
        "subject": "chat",
        "time": (clock.now() - timedelta(days=1)).isoformat(),
        "data": {"model": "llama", "input_tokens": 100_000_000, "output_tokens": 50_000_000},
    }
    globex_org = globex.get("orgs")["data"][0]["id"]  # usage is the platform's to write
    assert admin.usage.send([event], org_id=globex_org)["accepted"] == 1  # type: ignore[attr-defined]
    return admin


@pytest.fixture
def platform(admin: Client, db: Database, clock: VirtualClock) -> Client:
    return _platform(admin, db, clock)


def test_live_report_reflects_billed_revenue_and_concentration(
    platform: Client, db: Database, clock: VirtualClock
) -> None:
    live: dict[str, Any] = platform.economics.live(window_days=30)  # type: ignore[attr-defined]
    want = _expected_revenue(db, clock, 30)
    total = sum(want.values(), Decimal(0))
    assert want["acme"] > want["globex"] > TOKENS  # both ran; acme twice as much GPU time
    billing = live["billing"]
    assert billing["revenue"] == float(total)
    assert billing["revenue_by_customer"] == {k: float(v) for k, v in want.items()}
    assert billing["revenue_by_class"] == {
        "on_demand": float(total - TOKENS),
        "tokens": float(TOKENS),
    }
    assert billing["price_per_gpu_hour"] == {"H100-SXM-80GB": 3.0}  # realized, not list price
    shares = {k: v / total for k, v in want.items()}
    assert billing["top1"] == pytest.approx(float(shares["acme"]), abs=1e-6)
    assert billing["top2"] == pytest.approx(1.0)
    hhi = sum(float(s * 100) ** 2 for s in shares.values())
    assert billing["hhi"] == pytest.approx(hhi, abs=0.01)
    assert billing["largest"] == "acme"

    # The projection uses them: customers' shares of revenue, the lose-top-customer case.
    conc = live["concentration"]
    assert conc["customers"] == {k: pytest.approx(float(v), abs=1e-4) for k, v in shares.items()}
    assert conc["largest"] == "acme"
    assert conc["without_largest"]["scenario"] == "without acme"
    assert live["sources"]["concentration"].startswith("shares of billed revenue")
    assert live["sources"]["price"].startswith("realized from billing")
    assert live["sources"]["utilization"].startswith("measured from allocation intervals")
    assert live["sources"]["backlog"] == "billing: no contracted backlog"
    assert live["usage"]["measured_utilization"] == pytest.approx(24 / 32, rel=1e-3)


def test_econ_live_in_the_cli_shows_billing(
    platform: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output.out, "width", 240)
    monkeypatch.setattr(STATE, "_client", platform)
    app = typer.Typer()
    app.add_typer(econ_app, name="econ")
    result = CliRunner().invoke(app, ["econ", "live", "--window-days", "30"])
    assert result.exit_code == 0, result.output
    assert "realized from billing" in result.output
    assert "shares of billed revenue" in result.output


def test_the_operators_own_usage_is_not_customer_revenue(
    admin: Client, db: Database, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The operator smoke-tests 8 GPUs for the same 10 days: billing rates it like anyone's,
    # but it is the house's own money going round, not a customer's.
    platform = _platform(admin, db, clock, operator_gpus=8)
    live: dict[str, Any] = platform.economics.live(window_days=30)  # type: ignore[attr-defined]
    rated = _expected_revenue(db, clock, 30)
    own = rated.pop("operator")
    assert own > 0
    total = sum(rated.values(), Decimal(0))
    billing = live["billing"]
    assert billing["revenue_by_customer"] == {k: float(v) for k, v in rated.items()}
    assert billing["revenue"] == float(total)
    assert billing["revenue_by_class"] == {
        "on_demand": float(total - TOKENS),
        "tokens": float(TOKENS),
    }
    assert billing["top1"] == pytest.approx(float(rated["acme"] / total), abs=1e-6)
    assert billing["largest"] == "acme"
    assert "operator" not in live["concentration"]["customers"]
    # Utilization (hence projected revenue) counts customers' GPUs only: 24 of 32, not 32.
    assert live["usage"]["measured_utilization"] == pytest.approx(24 / 32, rel=1e-3)
    assert live["internal_usage"] == {
        "excluded": True,
        "orgs": ["operator"],
        "currency": "USD",
        "revenue": float(own),
        "gpu_hours": pytest.approx(8 * 240, rel=1e-3),
    }
    assert live["sources"]["internal_usage"].startswith("excluded: the operator's own usage")
    assert f"USD {own:,.2f}" in live["sources"]["internal_usage"]

    monkeypatch.setattr(output.out, "width", 400)
    monkeypatch.setattr(STATE, "_client", platform)
    app = typer.Typer()
    app.add_typer(econ_app, name="econ")
    result = CliRunner().invoke(app, ["econ", "live", "--window-days", "30"])
    assert result.exit_code == 0, result.output
    assert "internal_usage: excluded" in result.output
    assert f"USD {own:,.2f}" in result.output
