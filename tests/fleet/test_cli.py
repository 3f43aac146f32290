"""CLI tests: the real commands over the SDK over the app (TestClient)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from neocloud.cli import output
from neocloud.cli.fleet import fleet_app, nodes_app
from neocloud.cli.state import STATE
from neocloud.client import Client

from .helpers import GOOD

runner = CliRunner()


app = typer.Typer()
app.add_typer(fleet_app, name="fleet")
app.add_typer(nodes_app, name="nodes")


@pytest.fixture
def cli(admin: Client, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setattr(STATE, "_client", admin)
    monkeypatch.setattr(output.out, "width", 200)
    return runner


def test_generate_writes_a_spec(tmp_path: Path) -> None:
    out = tmp_path / "fleet.yaml"
    result = runner.invoke(
        app,
        [
            "fleet",
            "generate",
            "--gpus",
            "4096",
            "--model",
            "h100",
            "--regions",
            "2",
            "--fabric-size",
            "256",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    from neocloud.fleet.spec import load_spec_file

    spec = load_spec_file(out)
    assert spec.node_count == 512
    assert len(spec.sites) == 2


def test_import_list_and_actions(cli: CliRunner, tmp_path: Path) -> None:
    spec = tmp_path / "fleet.yaml"
    spec.write_text(GOOD)
    result = cli.invoke(app, ["fleet", "import", str(spec)])
    assert result.exit_code == 0, result.output
    assert "imported 17 nodes" in result.output
    result = cli.invoke(app, ["nodes", "list", "--gpu-model", "H100", "--state", "available"])
    assert result.exit_code == 0, result.output
    assert "HOSTNAME" in result.output
    assert "special-01" in result.output
    result = cli.invoke(app, ["nodes", "list", "--label", "pool=research", "--json"])
    nodes = json.loads(result.output)
    assert [n["hostname"] for n in nodes] == ["special-01"]
    assert nodes[0]["object"] == "node"
    node_id = nodes[0]["id"]
    result = cli.invoke(app, ["nodes", "cordon", node_id, "--reason", "cable"])
    assert result.exit_code == 0, result.output
    assert "cordoned" in result.output
    result = cli.invoke(app, ["nodes", "transition", node_id, "repair"])
    assert result.exit_code == 1
    assert "allowed: available, burn_in, failed, maintenance, retired" in result.output
    result = cli.invoke(app, ["fleet", "summary", "--by", "fabric"])
    assert result.exit_code == 0, result.output
    assert "us-east-1a-ib01" in result.output
    assert "total: 17 nodes, 136 GPUs" in result.output
    result = cli.invoke(app, ["nodes", "events", node_id])
    assert "cable" in result.output


def test_import_of_a_bad_file_names_the_line(cli: CliRunner, tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(GOOD.replace("vcpus: 224", "vcpus: -3"))
    result = cli.invoke(app, ["fleet", "import", str(spec)])
    assert result.exit_code == 2
    assert "templates.h100-8x.vcpus" in result.output
    assert "line 7" in result.output


def test_nodes_by_hostname_and_a_cut_list_says_so(cli: CliRunner, tmp_path: Path) -> None:
    spec = tmp_path / "fleet.yaml"
    spec.write_text(GOOD)
    assert cli.invoke(app, ["fleet", "import", str(spec)]).exit_code == 0
    result = cli.invoke(app, ["nodes", "list", "--limit", "5"])
    assert result.exit_code == 0, result.output
    assert "showing the first 5; more exist" in result.stderr
    result = cli.invoke(app, ["nodes", "list", "--all", "--json"])
    assert len(json.loads(result.stdout)) == 17
    result = cli.invoke(app, ["nodes", "list", "--all"])
    assert "more exist" not in result.stderr

    result = cli.invoke(app, ["nodes", "get", "special-01"])
    assert result.exit_code == 0, result.output
    lines = [ln.split() for ln in result.stdout.splitlines() if ln.strip()]
    assert lines[0][0] == "id"
    assert lines[0][1].startswith("node_")
    assert ["hostname", "special-01"] in lines
    result = cli.invoke(app, ["nodes", "cordon", "special-01", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cordoned"] is True
    result = cli.invoke(app, ["nodes", "events", "nosuch-host"])
    assert result.exit_code == 1
    assert "node_not_found" in result.stderr
