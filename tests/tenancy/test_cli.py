"""The tenancy CLI against the app, through the SDK over a TestClient."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from neocloud.cli.state import STATE
from neocloud.cli.tenancy import APPS
from neocloud.client import Client
from neocloud.kernel.clock import VirtualClock

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
        ("B200-SXM-180GB", "override"),  # the alias B200 is stored as the canonical name
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


# -- issue 21: lists that say when they are cut, one parser for --since, names for ids ------


def test_audit_is_newest_first_and_a_new_org_shows_its_creation(
    cli: typer.Typer, admin: Client
) -> None:
    org = _json(cli, "orgs", "create", "Acme", "--slug", "acme")
    assert isinstance(org, dict)
    for name in ("p1", "p2", "p3"):
        _json(cli, "projects", "create", name, "--org", org["id"])
    events = _json(cli, "audit", "list", "--org", org["id"], "--limit", "2")
    assert isinstance(events, list)
    assert [e["path"] for e in events] == [f"/api/v1/orgs/{org['id']}/projects"] * 2
    assert events[0]["id"] > events[1]["id"]  # newest first

    every = _json(cli, "audit", "list", "--org", org["id"], "--all")
    assert isinstance(every, list)
    assert [(e["method"], e["path"]) for e in every][-1] == ("POST", "/api/v1/orgs")
    assert every[-1]["target_id"] == org["id"]  # the new org's log starts with its creation
    assert len(every) == 4

    # Cursor pagination walks newest first too: pages of one, no repeat, no gap.
    ids, after = [], None
    while True:
        page = admin.audit.list(org_id=org["id"], limit=1, after=after)
        ids += [e["id"] for e in page["data"]]
        if not page["has_more"]:
            break
        after = page["next_cursor"]
    assert ids == [e["id"] for e in every]

    cut = runner.invoke(cli, ["audit", "list", "--org", org["id"], "--limit", "3"])
    assert cut.exit_code == 0, cut.output
    assert "showing the first 3; more exist" in cut.stderr


@pytest.mark.parametrize("since", ["7d", "7days", "12h", "30m", "2w", "2026-01-01T00:00:00Z"])
def test_audit_since_takes_the_common_forms(
    cli: typer.Typer, since: str, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(STATE, "clock", clock)  # "7d" is 7 days before the server's now
    _json(cli, "orgs", "create", "Acme", "--slug", "acme")
    events = _json(cli, "audit", "list", "--since", since)
    assert isinstance(events, list)
    assert [e["path"] for e in events] == ["/api/v1/orgs"]


def test_audit_since_refuses_what_it_cannot_read(cli: typer.Typer) -> None:
    result = runner.invoke(cli, ["audit", "list", "--since", "soonish"])
    assert result.exit_code == 2
    assert "7days" in result.output
    assert "soonish" in result.output


def test_keys_by_name_and_objects_with_lower_case_labels(cli: typer.Typer) -> None:
    created = runner.invoke(cli, ["orgs", "create", "Acme", "--slug", "acme"])
    assert created.exit_code == 0, created.output
    labels = [ln.split()[0] for ln in created.stdout.splitlines() if ln.strip()]
    assert labels == ["id", "slug", "name", "operator", "created"]
    assert "+00:00" not in created.stdout

    key = runner.invoke(cli, ["keys", "create", "ci", "--json"])
    assert key.exit_code == 0, key.output
    key_id = json.loads(key.stdout)["id"]
    shown = _json(cli, "keys", "get", "ci")
    assert isinstance(shown, dict)
    assert shown["id"] == key_id
    revoked = _json(cli, "keys", "revoke", "ci")
    assert isinstance(revoked, dict)
    assert revoked["revoked_at"] is not None
    missing = runner.invoke(cli, ["keys", "get", "nosuch", "--json"])
    assert missing.exit_code == 1
    assert json.loads(missing.stderr)["error"]["code"] == "api_key_not_found"


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


def test_keys_create_whose_first_answer_was_lost_says_revoke_and_retry(
    cli: typer.Typer, admin: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry replays the stored answer, whose secret is never stored: the CLI must not print
    'None' as the secret, but say what happened and what to do."""
    first = admin.post("keys", {"name": "ci"}, idempotency_key="lost-answer")
    assert first["secret"]

    def replay(name: str, **_: object) -> dict[str, object]:
        return admin.post("keys", {"name": name}, idempotency_key="lost-answer")

    monkeypatch.setattr(admin.keys, "create", replay)
    for args in (["keys", "create", "ci"], ["keys", "create", "ci", "--json"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 1, result.output
        assert "None" not in result.stdout
        assert f"neocloud keys revoke {first['id']}" in result.stderr
