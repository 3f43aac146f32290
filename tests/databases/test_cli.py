"""``neocloud databases …`` against the app through the SDK over a TestClient, on a simulated
service node: create prints the password and connection string once, show never does;
backups, restore, the CA, options and delete by name."""

from __future__ import annotations

import json
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from neocloud.cli.databases import APPS
from neocloud.cli.state import STATE
from neocloud.client import Client
from neocloud.databases.steps import DatabaseSteps
from neocloud.db.engine import Database
from neocloud.drivers.base import Drivers
from neocloud.drivers.sim import SimDriver
from neocloud.kernel.clock import VirtualClock

runner = CliRunner()


@pytest.fixture
def cli(acme: Client, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setattr(STATE, "_client", acme)
    root = typer.Typer()
    for name, sub in APPS.items():
        root.add_typer(sub, name=name)
    return root


def run(cli: typer.Typer, *args: str) -> str:
    result = runner.invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_databases_commands(
    cli: typer.Typer, service_node: str, db: Database, clock: VirtualClock, app: Any
) -> None:
    assert "versions: 15" in run(cli, "databases", "options")
    made = json.loads(
        run(cli, "databases", "create", "shop", "--version", "15", "--storage-gib", "3", "--json")
    )
    password = made["password"]
    table = run(cli, "databases", "create", "web", "--version", "15", "--storage-gib", "3")
    assert "sslmode=verify-full" in table  # the connection string, with its password
    steps = DatabaseSteps(db, clock, Drivers.only(SimDriver()), app.state.secret_box)
    for _ in range(10):  # both creates run in the steps' threads; a loaded machine may need more
        steps.run_once()
        steps.wait()
        states = {d["state"] for d in json.loads(run(cli, "databases", "list", "--json"))}
        if states == {"running"}:
            break
        clock.advance(1)
    assert states == {"running"}
    shown = run(cli, "databases", "show", "shop")
    assert "running" in shown
    assert password not in shown
    listed = json.loads(run(cli, "databases", "list", "--json"))
    assert [d["name"] for d in listed] == ["shop", "web"]
    backup = json.loads(run(cli, "databases", "backup", "shop", "--json"))
    clock.advance(1)
    steps.run_once()
    steps.wait()
    assert "completed" in run(cli, "databases", "backups", "shop")
    copy = json.loads(
        run(
            cli, "databases", "restore", backup["id"], "shop_copy", "--version", "15",
            "--storage-gib", "3", "--json",
        )
    )  # fmt: skip
    assert copy["restore_from"] == backup["id"]
    assert run(cli, "databases", "ca", "shop").startswith("-----BEGIN CERTIFICATE-----")
    gone = json.loads(run(cli, "databases", "delete", "web", "--json"))
    assert gone["state"] == "deleting"
    missing = runner.invoke(cli, ["databases", "show", "nope"])
    assert missing.exit_code == 1
