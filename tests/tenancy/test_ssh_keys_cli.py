"""``neocloud ssh-keys add|list|get|delete`` against the app, through the SDK over a TestClient;
a private key given by mistake is refused before anything is sent."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from neocloud.cli.state import STATE
from neocloud.cli.tenancy import APPS
from neocloud.client import Client

from .test_ssh_keys import KeyGen, make_keygen

runner = CliRunner()


@pytest.fixture(scope="module")
def keygen(tmp_path_factory: pytest.TempPathFactory) -> KeyGen:
    return make_keygen(tmp_path_factory)


@pytest.fixture
def cli(admin: Client, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setattr(STATE, "_client", admin)
    root = typer.Typer()
    for name, sub in APPS.items():
        root.add_typer(sub, name=name)
    return root


def _json(cli: typer.Typer, *args: str, stdin: str | None = None) -> object:
    result = runner.invoke(cli, [*args, "--json"], input=stdin)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_add_from_a_file_text_or_stdin_then_list_get_delete_by_name(
    cli: typer.Typer, keygen: KeyGen
) -> None:
    laptop, desktop, ci = keygen("ed25519"), keygen("ecdsa"), keygen("rsa", "-b", "2048")
    first = _json(cli, "ssh-keys", "add", "laptop", "--file", str(laptop.public))
    assert isinstance(first, dict)
    assert first["fingerprint"] == laptop.keygen_print()[1]
    second = _json(cli, "ssh-keys", "add", "desktop", "--key", desktop.line)
    third = _json(cli, "ssh-keys", "add", "ci", "--file", "-", stdin=ci.public.read_text())
    assert isinstance(third, dict)
    assert third["public_key"] == ci.line
    listed = _json(cli, "ssh-keys", "list")
    assert isinstance(listed, list)
    assert [k["name"] for k in listed] == ["laptop", "desktop", "ci"]

    table = runner.invoke(cli, ["ssh-keys", "list"])
    assert table.exit_code == 0
    assert "FINGERPRINT" in table.stdout
    assert laptop.keygen_print()[1] in table.stdout

    got = _json(cli, "ssh-keys", "get", "desktop")
    assert got == second
    gone = _json(cli, "ssh-keys", "delete", "laptop")
    assert isinstance(gone, dict)
    assert (gone["id"], gone["deleted"]) == (first["id"], True)
    shown = runner.invoke(cli, ["ssh-keys", "delete", "desktop"])
    assert shown.exit_code == 0
    assert "deleted" in shown.output
    remaining = _json(cli, "ssh-keys", "list")
    assert [k["name"] for k in remaining] == ["ci"]  # type: ignore[union-attr]


def test_a_private_key_file_is_refused_before_anything_is_sent(
    cli: typer.Typer, keygen: KeyGen
) -> None:
    pair = keygen("ed25519")
    result = runner.invoke(cli, ["ssh-keys", "add", "oops", "--file", str(pair.private)])
    assert result.exit_code == 2
    assert "PRIVATE key" in result.output
    assert f"{pair.private}.pub" in result.output
    secret_lines = [line for line in pair.private_text.splitlines() if "-----" not in line]
    assert not any(line[:24] in result.output for line in secret_lines)
    assert _json(cli, "ssh-keys", "list") == []


def test_errors_are_precise(cli: typer.Typer, keygen: KeyGen) -> None:
    both = runner.invoke(cli, ["ssh-keys", "add", "k", "--key", "x", "--file", "-"])
    assert both.exit_code == 2
    assert "exactly one of --file or --key" in both.output
    short = runner.invoke(cli, ["ssh-keys", "add", "k", "--key", keygen("rsa", "-b", "1024").line])
    assert short.exit_code == 2
    assert "ssh_key_too_short" in short.output
    assert "this one has 1024" in short.output
    missing = runner.invoke(cli, ["ssh-keys", "get", "nope"])
    assert missing.exit_code == 1
    assert "ssh_key_not_found" in missing.output
    unreadable = runner.invoke(cli, ["ssh-keys", "add", "k", "--file", "/nonexistent/id.pub"])
    assert unreadable.exit_code == 2
    assert "cannot read" in unreadable.output
