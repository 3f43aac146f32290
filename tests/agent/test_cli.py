"""``neocloud agent`` in the CLI: the same options as ``python -m neocloud.agent``."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from neocloud.cli.main import app

runner = CliRunner()


def test_neocloud_agent_print_on_a_recorded_node() -> None:
    result = runner.invoke(app, ["agent", "--print", "--recorded", "h100-lost-gpu"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["simulated"] is True
    assert len(printed["inventory"]["gpus"]) == 7


def test_neocloud_agent_without_a_token_exits_2() -> None:
    result = runner.invoke(
        app, ["agent", "--control-plane", "http://127.0.0.1:9", "--node-id", "n", "--once"]
    )
    assert result.exit_code == 2
