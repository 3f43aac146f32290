"""Billing CLI over the SDK over the app (TestClient)."""

from __future__ import annotations

import csv
import io
import json

import pytest
import typer
from typer.testing import CliRunner

from neocloud.billing.pricebook import SKYPILOT_COLUMNS
from neocloud.cli import output
from neocloud.cli.billing import APPS
from neocloud.cli.state import STATE
from neocloud.client import Client
from neocloud.compute.worker import Worker
from neocloud.kernel.clock import VirtualClock

runner = CliRunner()
app = typer.Typer()
for _name, _sub in APPS.items():
    app.add_typer(_sub, name=_name)


@pytest.fixture
def as_client(monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setattr(output.out, "width", 200)

    def use(client: Client) -> None:
        monkeypatch.setattr(STATE, "_client", client)

    return use


def test_skypilot_catalog_lists_the_fleet_zones(fleet: Client, as_client) -> None:  # type: ignore[no-untyped-def]
    as_client(fleet)
    result = runner.invoke(app, ["billing", "catalog", "--format", "skypilot"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert tuple(rows[0]) == SKYPILOT_COLUMNS
    assert {(r["Region"], r["AvailabilityZone"]) for r in rows} == {("us-east-1", "us-east-1a")}
    eight = next(r for r in rows if r["InstanceType"] == "8xH100")
    assert (eight["Price"], eight["SpotPrice"]) == ("23.92", "14.32")  # as compute quotes


def test_invoice_usage_and_publish(  # type: ignore[no-untyped-def]
    fleet: Client, acme: Client, worker: Worker, clock: VirtualClock, as_client
) -> None:
    org = acme.get("orgs")["data"][0]["id"]
    period = clock.now().strftime("%Y-%m")
    acme.instances.create("8xH100")
    worker.run_once()
    clock.advance(3600)
    as_client(acme)
    result = runner.invoke(app, ["billing", "invoice", "--org", org, "--period", period])
    assert result.exit_code == 0, result.output
    assert "H100-SXM-80GB.on_demand" in result.output
    assert "TOTAL  23.92 USD" in result.output  # 8 GPU-hours at 2.99
    result = runner.invoke(app, ["invoices", "preview", "--org", org, "--period", period, "--json"])
    assert json.loads(result.output)["total"]["amount"] == "23.92"
    result = runner.invoke(app, ["invoices", "preview", "--org", org, "--period", period, "--csv"])
    assert ",23.92,USD," in result.output

    events = [
        {"id": "e1", "source": "s", "type": "t", "subject": "x", "time": "2026-03-01T13:00:00Z"}
    ]
    as_client(fleet)  # usage events are the platform's to write: an operator admin
    args = ["usage", "send", "-", "--org", org, "--json"]
    result = runner.invoke(app, args, input=json.dumps(events * 2))
    assert json.loads(result.output) == {"object": "usage_batch", "accepted": 1, "duplicates": 1}

    args = ["billing", "publish", "--effective-from", "2026-04-01T00:00:00Z"]
    result = runner.invoke(app, [*args, "--price", "H100-SXM-80GB.on_demand=2.50", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["gpu_prices"]["H100-SXM-80GB.on_demand"] == "2.50"
    result = runner.invoke(app, [*args, "--price", "oops"])
    assert result.exit_code == 2


def test_invoices_create_get_finalize(  # type: ignore[no-untyped-def]
    fleet: Client, acme: Client, clock: VirtualClock, as_client
) -> None:
    org = acme.get("orgs")["data"][0]["id"]
    as_client(fleet)
    result = runner.invoke(
        app, ["invoices", "create", "--org", org, "--period", "2026-01", "--json"]
    )
    assert result.exit_code == 0, result.output
    inv = json.loads(result.output)
    result = runner.invoke(app, ["invoices", "finalize", inv["id"]])
    assert result.exit_code == 0, result.output
    assert "finalized" in result.output
    assert "TOTAL  0.00 USD" in result.output
    result = runner.invoke(app, ["invoices", "list", "--org", org])
    assert inv["id"] in result.output
    result = runner.invoke(app, ["invoices", "get", inv["id"], "--csv"])
    assert result.output.startswith("invoice_id,period,kind")


def test_contracts_create_shows_every_term(  # type: ignore[no-untyped-def]
    fleet: Client, acme: Client, as_client
) -> None:
    org = acme.get("orgs")["data"][0]["id"]
    as_client(fleet)
    args = ["billing", "contracts", "create", "--org", org, "--kind", "prepaid"]
    dates = ["--start", "2026-03-01T00:00:00Z", "--end", "2027-03-01T00:00:00Z"]
    result = runner.invoke(app, [*args, *dates, "--amount", "1234.5"])
    assert result.exit_code == 0, result.output
    rows = {
        ln.split(maxsplit=1)[0]: ln.split(maxsplit=1)[-1].strip()
        for ln in result.stdout.splitlines()
        if ln.strip()
    }
    assert rows["amount"] == "1234.50 USD"
    assert rows["kind"] == "prepaid"
    assert "2026-03-01T00:00:00Z" in result.stdout
    contract = rows["id"]
    result = runner.invoke(app, ["billing", "contracts", "get", contract])
    assert "1234.50 USD" in result.stdout


def test_invoice_preview_defaults_to_the_callers_org(  # type: ignore[no-untyped-def]
    acme: Client, clock: VirtualClock, as_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tenant sees its own invoice without naming its org or month (it needed --org)."""
    org = acme.get("orgs")["data"][0]
    as_client(acme)
    monkeypatch.setattr(STATE, "clock", clock)
    period = clock.now().strftime("%Y-%m")
    result = runner.invoke(app, ["invoices", "preview", "--json"])  # and this month by default
    assert result.exit_code == 0, result.output
    assert (json.loads(result.stdout)["org_id"], json.loads(result.stdout)["period"]) == (
        org["id"],
        period,
    )
    by_slug = runner.invoke(app, ["invoices", "preview", "--org", org["slug"], "--period", period])
    assert by_slug.exit_code == 0, by_slug.output
    assert org["id"] in by_slug.stdout
