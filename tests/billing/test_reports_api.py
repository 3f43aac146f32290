"""Revenue reports over HTTP (SDK) and the CLI: ``/billing/reports/…``, ``neocloud billing
report revenue|backlog|concentration``; the figures are those of ``test_reports``."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from neocloud.cli import output
from neocloud.cli.billing import APPS
from neocloud.cli.state import STATE
from neocloud.client import ApiError, Client

from .test_reports import usage  # noqa: F401 - the fixture with known figures

runner = CliRunner()
app = typer.Typer()
for _name, _sub in APPS.items():
    app.add_typer(_sub, name=_name)


@pytest.mark.usefixtures("usage")
def test_reports_over_http(fleet: Client, acme: Client) -> None:
    revenue = fleet.billing_reports.revenue("2026-03", "2026-04")  # type: ignore[attr-defined]
    assert revenue["object"] == "billing.revenue_report"
    assert revenue["total"] == {"amount": "1000.00", "currency": "USD"}
    assert [(r["key"], r["amount"]["amount"]) for r in revenue["by_month"]] == [
        ("2026-03", "850.00"),
        ("2026-04", "150.00"),
    ]
    assert [r["key"] for r in revenue["by_org"]] == ["org_a", "org_b", "org_c"]
    conc = fleet.billing_reports.concentration(window_days=30)  # type: ignore[attr-defined]
    assert (conc["top1"], conc["top2"], conc["hhi"]) == ("0.500000", "0.800000", "3800.00")
    assert [(c["org_id"], c["share"]) for c in conc["customers"]] == [
        ("org_a", "0.500000"),
        ("org_b", "0.300000"),
        ("org_c", "0.200000"),
    ]
    backlog = fleet.billing_reports.backlog()  # type: ignore[attr-defined]
    assert (backlog["total"]["amount"], backlog["by_org"]) == ("0.00", [])

    with pytest.raises(ApiError) as err:
        acme.billing_reports.revenue("2026-03", "2026-04")  # type: ignore[attr-defined]
    assert err.value.status == 403
    for start, end in (("2026-3", "2026-04"), ("2026-04", "2026-03")):
        with pytest.raises(ApiError) as err:
            fleet.billing_reports.revenue(start, end)  # type: ignore[attr-defined]
        assert err.value.status == 422
    with pytest.raises(ApiError) as err:
        fleet.billing_reports.concentration(window_days=0)  # type: ignore[attr-defined]
    assert err.value.status == 422


@pytest.mark.usefixtures("usage")
def test_reports_in_the_cli(fleet: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output.out, "width", 200)
    monkeypatch.setattr(STATE, "_client", fleet)
    result = runner.invoke(
        app, ["billing", "report", "revenue", "--from", "2026-03", "--to", "2026-04"]
    )
    assert result.exit_code == 0, result.output
    assert "TOTAL  1000.00 USD" in result.output
    assert "850.00" in result.output
    assert "org_a" in result.output
    result = runner.invoke(app, ["billing", "report", "concentration", "--window-days", "30"])
    assert result.exit_code == 0, result.output
    assert "HHI 3800.00" in result.output
    assert "top-1 0.500000" in result.output
    result = runner.invoke(app, ["billing", "report", "backlog", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["object"] == "billing.backlog_report"
