"""Every command of ``neocloud`` says what it does, and every option and argument what it takes.

The walk starts at the real root app (every command group registered, as ``neocloud`` runs) and
visits each group and command recursively.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from neocloud import __version__
from neocloud.cli import main

runner = CliRunner()


@pytest.fixture(scope="module")
def root() -> Any:
    if not main.app.registered_groups or len(main.app.registered_groups) < 2:
        main._register_subcommands()
    return typer.main.get_command(main.app)


def _walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every visible command under ``command`` (Typer's click objects: groups have ``commands``)."""
    yield path, command
    if hasattr(command, "commands"):
        for name, sub in sorted(command.commands.items()):
            if not sub.hidden:
                yield from _walk(sub, (*path, name))


def _undescribed(root: Any) -> list[str]:
    missing: list[str] = []
    for path, command in _walk(root, ("neocloud",)):
        where = " ".join(path)
        if not (command.help or command.short_help or "").strip():
            missing.append(f"{where}: no description")
        for param in command.params:
            if getattr(param, "hidden", False):
                continue
            if not (getattr(param, "help", None) or "").strip():
                missing.append(f"{where} {param.opts[0] if param.opts else param.name}: no help")
    return missing


def test_every_command_option_and_argument_is_described(root: Any) -> None:
    assert _undescribed(root) == []


def test_the_walk_reaches_nested_commands(root: Any) -> None:
    paths = {" ".join(p) for p, _ in _walk(root, ("neocloud",))}
    assert {
        "neocloud nodes get",
        "neocloud billing contracts create",
        "neocloud clusters events",
    } <= paths
    assert len(paths) > 100


def test_on_off_flags_show_no_value_placeholder(root: Any) -> None:
    result = runner.invoke(main.app, ["instances", "create", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    flag_lines = [ln for ln in result.output.splitlines() if "--queue" in ln or "--json" in ln]
    assert flag_lines
    assert all("<bool>" not in ln for ln in flag_lines), flag_lines
    assert "<bool>" not in result.output


def test_enum_options_list_their_values(root: Any) -> None:
    result = runner.invoke(main.app, ["instances", "create", "--help"], env={"COLUMNS": "200"})
    assert "auto|strict|forbid" in result.output
    assert "on_demand|spot" in result.output


def test_version_flag(root: Any) -> None:
    result = runner.invoke(main.app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"neocloud {__version__}"


def test_billing_invoice_is_a_hidden_alias_of_invoices_preview(root: Any) -> None:
    billing = root.commands["billing"]
    assert billing.commands["invoice"].hidden
    result = runner.invoke(main.app, ["billing", "--help"], env={"COLUMNS": "200"})
    assert " invoice " not in result.output
