"""The tenancy CLI against the app, through the SDK over a TestClient."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from neocloud.cli.state import STATE
from neocloud.cli.tenancy import APPS
from neocloud.client import Client

runner = CliRunner()


@pytest.fixture
def cli(admin: Client, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setattr(STATE, "_client", admin)
    root = typer.Typer()
    for name, sub in APPS.items():
        root.add_typer(sub, name=name)
    return root


def _json(cli: typer.Typer, *args: str) -> object:
    result = runner.invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_orgs_projects_quotas_keys(cli: typer.Typer) -> None:
    org = _json(cli, "orgs", "create", "Acme", "--slug", "acme", "--owner-email", "o@acme.io")
    assert isinstance(org, dict)
    assert org["slug"] == "acme"
    orgs = _json(cli, "orgs", "list")
    assert isinstance(orgs, list)
    assert {o["slug"] for o in orgs} == {"operator", "acme"}

    table = runner.invoke(cli, ["orgs", "list"])
    assert table.exit_code == 0
    assert "acme" in table.stdout
    assert "SLUG" in table.stdout

    project = _json(cli, "projects", "create", "training", "--org", org["id"])
    assert _json(cli, "projects", "list", "--org", org["id"]) == [project]

    _json(cli, "quotas", "set-default", "H100-SXM-80GB", "8")
    _json(cli, "quotas", "set", "B200", "4", "--org", org["id"])
    quotas = _json(cli, "quotas", "list", "--org", org["id"])
    assert isinstance(quotas, list)
    assert {(q["gpu_model"], q["source"]) for q in quotas} == {
        ("H100-SXM-80GB", "default"),
        ("B200", "override"),
    }

    created = runner.invoke(cli, ["keys", "create", "ci"])
    assert created.exit_code == 0, created.output
    assert "nck_" in created.stdout
    keys = _json(cli, "keys", "list")
    assert isinstance(keys, list)
    assert len(keys) == 2
    assert all("secret" not in k for k in keys)

    events = _json(cli, "audit", "list", "--method", "post")
    assert isinstance(events, list)
    assert len(events) == 3  # org, project, key


def test_errors_are_precise_and_exit_nonzero(cli: typer.Typer) -> None:
    _json(cli, "orgs", "create", "Acme", "--slug", "acme")
    result = runner.invoke(cli, ["orgs", "create", "Acme again", "--slug", "acme"])
    assert result.exit_code == 1
    assert "slug_taken" in result.output
    result = runner.invoke(cli, ["orgs", "create", "Bad", "--slug", "Not OK"])
    assert result.exit_code == 2
    assert "slug" in result.output


def test_one_way_to_name_an_org(cli: typer.Typer) -> None:
    """--org takes an id, slug or name and defaults to the caller's org; an operator makes the
    key of a new org's owner in one command (it answered user_not_found)."""
    org = _json(cli, "orgs", "create", "Acme AI", "--owner-email", "ml@acme.example")
    assert isinstance(org, dict)
    key = _json(cli, "keys", "create", "ci", "--org", "Acme AI")
    assert isinstance(key, dict)
    owners = _json(cli, "users", "list", "--org", "acme-ai")
    assert isinstance(owners, list)
    assert [u["email"] for u in owners] == ["ml@acme.example"]
    assert (key["org_id"], key["user_id"]) == (org["id"], owners[0]["id"])

    _json(cli, "quotas", "set", "H100-SXM-80GB", "512", "--org", org["slug"])
    quotas = _json(cli, "quotas", "list", "--org", org["id"])
    assert isinstance(quotas, list)
    assert {(q["gpu_model"], q["limit_gpus"]) for q in quotas} >= {("H100-SXM-80GB", 512)}
    mine = _json(cli, "users", "list")  # no --org: the operator's own org
    assert isinstance(mine, list)
    assert "ml@acme.example" not in {u["email"] for u in mine}

    missing = runner.invoke(cli, ["users", "list", "--org", "nope"])
    assert missing.exit_code == 2
    assert "no organization 'nope'" in missing.stderr
