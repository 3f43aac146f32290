"""`neocloud fs …` and `neocloud storage-pools …` against the app, with simulated nodes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from compute.helpers import SMALL_FLEET, tenant_client
from neocloud.cli import output
from neocloud.cli.state import STATE
from neocloud.cli.storage import APPS
from neocloud.client import Client
from neocloud.db.engine import Database
from neocloud.kernel.clock import VirtualClock

from .test_filesystems import Cycle

runner = CliRunner()
cli_app = typer.Typer()
for group, sub in APPS.items():
    cli_app.add_typer(sub, name=group)


@pytest.fixture
def cycle(db: Database, clock: VirtualClock, tmp_path: Path) -> Cycle:
    return Cycle(db, clock, tmp_path)


def _run(client: Client, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    monkeypatch.setattr(STATE, "_client", client)
    monkeypatch.setattr(output.out, "width", 200)
    return runner.invoke(cli_app, list(args))


def test_fs_commands(
    admin: Client, cycle: Cycle, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    admin.fleet.import_spec(SMALL_FLEET)
    made = _run(
        admin,
        monkeypatch,
        "storage-pools", "create", "dev", "--backend", "local", "--replica", "1", "--json",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    assert json.loads(made.output)["state"] == "ready"
    listed = _run(admin, monkeypatch, "storage-pools", "list")
    assert "dev" in listed.output
    assert "local" in listed.output
    _, acme = tenant_client(admin, "acme")
    inst = acme.instances.create("8xH100")
    cycle()
    made = _run(acme, monkeypatch, "fs", "create", "ckpt", "--size-gib", "10", "--pool", "dev")
    assert made.exit_code == 0, made.output
    assert "creating" in made.output
    cycle()
    attached = _run(
        acme, monkeypatch, "fs", "attach", "ckpt", "--instance", inst["id"],
        "--mount-path", "/mnt/ckpt",
    )  # fmt: skip
    assert attached.exit_code == 0, attached.output
    cycle()
    shown = _run(acme, monkeypatch, "fs", "show", "ckpt")
    assert shown.exit_code == 0, shown.output
    assert "/mnt/ckpt" in shown.output
    assert "mounted (simulated)" in shown.output
    listed = _run(acme, monkeypatch, "fs", "list")
    assert f"{inst['id']}:/mnt/ckpt (attached)" in listed.output
    refused = _run(acme, monkeypatch, "fs", "delete", "ckpt")
    assert refused.exit_code != 0
    assert "filesystem_attached" in refused.output
    grown = _run(acme, monkeypatch, "fs", "resize", "ckpt", "--size-gib", "20", "--json")
    assert json.loads(grown.output)["size_gib"] == 20
    shrunk = _run(acme, monkeypatch, "fs", "resize", "ckpt", "--size-gib", "5")
    assert shrunk.exit_code != 0
    assert "size_gib" in shrunk.output
    detached = _run(acme, monkeypatch, "fs", "detach", "ckpt")
    assert detached.exit_code == 0, detached.output
    cycle()
    deleted = _run(acme, monkeypatch, "fs", "delete", "ckpt", "--json")
    assert deleted.exit_code == 0, deleted.output
    assert json.loads(deleted.output)["state"] == "deleting"
