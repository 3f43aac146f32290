"""Contracts, credits, previews with agreement lines and the invoicing run, over the API and
SDK (and the CLI), on both backends."""

from __future__ import annotations

from datetime import timedelta

import pytest
import typer
from typer.testing import CliRunner

from neocloud.cli import output
from neocloud.cli.billing import APPS
from neocloud.cli.state import STATE
from neocloud.client import ApiError, Client
from neocloud.compute.worker import Worker
from neocloud.kernel.clock import VirtualClock, rfc3339

runner = CliRunner()
cli = typer.Typer()
for _name, _sub in APPS.items():
    cli.add_typer(_sub, name=_name)


def _error(call, *args, **kwargs) -> ApiError:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as info:
        call(*args, **kwargs)
    return info.value


def test_contracts_and_credits_through_the_api(
    admin: Client, acme: Client, worker: Worker, clock: VirtualClock
) -> None:
    org = acme.get("orgs")["data"][0]["id"]
    start, end = "2026-03-01T00:00:00Z", "2027-03-01T00:00:00Z"
    ctr = admin.contracts.create(
        org, "commit_spend", start_at=start, end_at=end, amount="1000.00", note="MSA"
    )
    assert (ctr["object"], ctr["kind"], ctr["amount"]) == (
        "contract",
        "commit_spend",
        {"amount": "1000.00", "currency": "USD"},
    )
    bad = [
        ({"org_id": "org_nope"}, 404, "org_not_found", "org_id"),
        ({"end_at": "2026-02-01T00:00:00Z"}, 422, "invalid_dates", "end_at"),
        ({"amount": "-5"}, 422, "invalid_amount", "amount"),
        ({"kind": "barter"}, 422, "invalid_contract_kind", "kind"),
    ]
    for change, status, code, param in bad:
        fields = {"org_id": org, "kind": "commit_spend", "start_at": start, "end_at": end}
        fields["amount"] = "10"
        fields.update(change)
        err = _error(admin.contracts.create, fields.pop("org_id"), fields.pop("kind"), **fields)
        assert (err.status, err.code, err.param) == (status, code, param), change
    assert _error(acme.contracts.create, org, "prepaid", start_at=start, end_at=end).status == 403
    assert [c["id"] for c in acme.contracts.list(org)["data"]] == [ctr["id"]]  # nothing else
    assert acme.contracts.get(ctr["id"])["note"] == "MSA"

    grant = admin.credits.grant(org, "25.00", priority=2, expires_at="2027-01-01T00:00:00Z")
    assert grant["balance"] == {"amount": "25.00", "currency": "USD"}
    assert _error(admin.credits.grant, org, "0").code == "invalid_amount"
    assert _error(admin.credits.grant, "org_nope", "5").status == 404

    # 1 hour of 8 GPUs in March, then the preview carries the true-up and the credit
    inst = acme.instances.create("8xH100")
    worker.run_once()
    clock.advance(3600)
    acme.instances.terminate(inst["id"])
    worker.run_once()
    preview = acme.invoices.preview(org, "2026-03")
    usage = sum(float(ln["amount"]["amount"]) for ln in preview["lines"])
    kinds = [(a["kind"], a["reference_id"]) for a in preview["agreement_lines"]]
    assert kinds == [("true_up", ctr["id"]), ("credit", grant["id"])]
    true_up = preview["agreement_lines"][0]["amount"]["amount"]
    # March from the contract's start: the whole 1000.00, less the usage
    assert float(true_up) == pytest.approx(1000.00 - usage)
    assert preview["agreement_lines"][1]["amount"]["amount"] == "-25.00"
    assert preview["total"]["amount"] == "975.00"
    csv_text = acme.invoices.preview_csv(org, "2026-03")
    assert f"true_up.commit_spend,,0,,1000.00,{true_up},USD,{ctr['id']}" in csv_text

    # the run builds March's draft (inside grace), then finalizes it; the draft equals the preview
    clock.set(clock.now().replace(month=4, day=2))
    run = admin.invoices.close("2026-03")
    assert (len(run["drafts"]), run["finalized"]) == (1, [])
    draft = admin.invoices.get(run["drafts"][0])
    assert draft["total"]["amount"] == "975.00"
    assert [ln["reference_id"] for ln in draft["lines"][1:]] == [ctr["id"], grant["id"]]
    rows = admin.invoices.csv(draft["id"]).strip().splitlines()
    assert rows[0].endswith(",fact_ids,reference_id")
    assert rows[2].startswith(f"{draft['id']},2026-03,true_up,2026-03,commit_spend,")
    assert rows[2].endswith(f",{ctr['id']}")
    clock.advance(timedelta(days=3).total_seconds())
    assert admin.invoices.close()["finalized"] == [draft["id"]]  # default: last month
    assert admin.invoices.close()["unchanged"] == [draft["id"]]
    assert acme.credits.list(org)["data"][0]["balance"]["amount"] == "0.00"
    assert acme.invoices.credit_notes(org)["data"] == []
    assert _error(acme.invoices.close).status == 403


def test_invoice_list_pages_with_a_cursor(admin: Client, acme: Client, clock: VirtualClock) -> None:
    org = acme.get("orgs")["data"][0]["id"]
    ids = [admin.invoices.build(org, p)["id"] for p in ("2026-01", "2026-02", "2026-03")]
    first = acme.invoices.list(org, limit=2)
    assert ([i["id"] for i in first["data"]], first["has_more"]) == (ids[:2], True)
    rest = acme.invoices.list(org, limit=2, after=first["next_cursor"])
    assert ([i["id"] for i in rest["data"]], rest["has_more"]) == (ids[2:], False)
    assert _error(acme.invoices.list, org, after="!!").code == "invalid_cursor"


def test_cli_contracts_credits_and_close(
    admin: Client, acme: Client, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output.out, "width", 200)
    monkeypatch.setattr(STATE, "_client", admin)
    org = acme.get("orgs")["data"][0]["id"]
    start, end = rfc3339(clock.now()), rfc3339(clock.now() + timedelta(days=400))
    create = ["billing", "contracts", "create", "--org", org, "--kind", "prepaid"]
    made = runner.invoke(cli, [*create, "--start", start, "--end", end, "--amount", "300"])
    assert made.exit_code == 0, made.output
    listed = runner.invoke(cli, ["billing", "contracts", "list", "--org", org])
    assert "prepaid" in listed.output
    granted = runner.invoke(cli, ["billing", "credits", "grant", "--org", org, "--amount", "5"])
    assert granted.exit_code == 0, granted.output
    credits = runner.invoke(cli, ["billing", "credits", "list", "--org", org, "--json"])
    assert '"amount": "5.00"' in credits.output
    preview = runner.invoke(cli, ["billing", "invoice", "--org", org, "--period", "2026-03"])
    assert preview.exit_code == 0, preview.output
    assert "prepaid" in preview.output
    closed = runner.invoke(cli, ["billing", "close", "--period", "2026-03"])
    assert closed.exit_code == 0, closed.output
    assert "2026-03: 0 finalized, 1 draft(s)" in closed.output
    bad = runner.invoke(cli, ["billing", "contracts", "create", "--org", org, "--kind", "barter"])
    assert bad.exit_code != 0
    assert "invalid_contract_kind" in bad.output or "kind must be one of" in bad.output
